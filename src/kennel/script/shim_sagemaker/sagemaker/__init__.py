"""Placeholders for the SageMaker Python SDK, where it is not installed: training scripts import notebook-side
names they never use (``from sagemaker.debugger import Rule, rule_configs``), and under ``kennel run`` those
imports succeed. Every name of every submodule is a placeholder: it imports, it can be called and its attributes
read, as configuration code does (``Rule.sagemaker(rule_configs.vanishing_gradient())``); using what a call made
(``PyTorch(...).fit()``, ``Session().default_bucket()``) raises :class:`SageMakerNotInstalled`."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

__version__ = "0+kennel.placeholders"


class SageMakerNotInstalled(RuntimeError):
    """A placeholder of the SageMaker SDK was asked to do real work."""


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class Placeholder:
    """A name of the SDK (``made`` False: a class, a function, a constant) or something a call to one made
    (``made`` True). A name's attributes are names and calling it makes something; what was made can be passed
    around, but calling it or one of its methods raises."""

    def __init__(self, name: str, made: bool = False) -> None:
        object.__setattr__(self, "_kennel_name", name)
        object.__setattr__(self, "_kennel_made", made)

    def __getattr__(self, attribute: str) -> Placeholder:
        if _dunder(attribute):
            raise AttributeError(attribute)
        return Placeholder(f"{self._kennel_name}.{attribute}", self._kennel_made)

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        if self._kennel_made:
            raise SageMakerNotInstalled(
                f"{self._kennel_name}(): the SageMaker Python SDK is not installed; kennel provides its names only "
                "so that a script's imports succeed. Install it (pip install sagemaker) to use it; kennel's own "
                "commands (kennel run, kennel tune --script, kennel serve) do locally what it does on AWS."
            )
        return Placeholder(f"{self._kennel_name}(...)", made=True)

    def __repr__(self) -> str:
        return f"<{self._kennel_name}: a kennel placeholder, the SageMaker SDK is not installed>"


class _PlaceholderModule(types.ModuleType):
    """A submodule of the SDK: any attribute is a placeholder name."""

    def __getattr__(self, name: str) -> Placeholder:
        if _dunder(name):
            raise AttributeError(name)
        return Placeholder(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes any ``sagemaker.*`` module nothing else found, as a placeholder module (a package: its own
    submodules come here too)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(f"{__name__}."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _PlaceholderModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def __getattr__(name: str) -> Placeholder:
    if _dunder(name):
        raise AttributeError(name)
    return Placeholder(f"{__name__}.{name}")


if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.append(_Finder())

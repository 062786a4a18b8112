"""smdebug's small names that scripts import beside the hook: the modes, the configuration objects, the
collections and ``str2bool``. Torch-free, so ``from smdebug import modes`` costs nothing.

The configuration objects (``SaveConfig``, ``ReductionConfig``, collections) are accepted and kept, as a script
builds them, but what the hook captures is set by the kennel job (``debug:`` in its config), so that one script
runs with the same captures and rules whatever it asks for."""

from __future__ import annotations

import argparse
from enum import Enum
from typing import Any, ClassVar


class ModeKeys(Enum):
    """The phase of a job a step belongs to (``smd.modes``); steps are counted in each mode separately."""

    TRAIN = 1
    EVAL = 2
    PREDICT = 3
    GLOBAL = 4  # no mode set yet


ALLOWED_MODES = list(ModeKeys)
ALLOWED_MODE_NAMES = [mode.name for mode in ModeKeys]


def str_to_mode_keys(name: str) -> ModeKeys:
    """``"train"`` -> ``ModeKeys.TRAIN``."""
    try:
        return ModeKeys[name.upper()]
    except KeyError:
        raise ValueError(f"invalid mode {name!r}; valid: {', '.join(n.lower() for n in ALLOWED_MODE_NAMES)}") from None


class NotABoolean(argparse.ArgumentTypeError, ValueError):
    """Raised by :func:`str2bool`: argparse reports it as a bad argument, and it is a ValueError for the rest."""


_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


def str2bool(value: str | bool) -> bool:
    """An argparse ``type`` for flags written ``--flag true``: yes/no, true/false, on/off, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise NotABoolean(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


class _Kept:
    """A configuration object that keeps the arguments it was made with (positional ones in ``fields`` order),
    rejects names it does not know as the real class would, and shows them in its repr."""

    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self.fields):
            raise TypeError(f"{type(self).__name__}() takes at most {len(self.fields)} positional arguments")
        given = dict(zip(self.fields, args, strict=False))
        unknown = sorted(set(kwargs) - set(self.fields))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s): {', '.join(unknown)}")
        given.update(kwargs)
        for name in self.fields:
            setattr(self, name, given.get(name))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.fields if getattr(self, n) is not None)
        return f"{type(self).__name__}({shown})"


class SaveConfigMode(_Kept):
    fields = ("save_interval", "start_step", "end_step", "save_steps")


class SaveConfig(_Kept):
    fields = ("mode_save_configs", "save_interval", "start_step", "end_step", "save_steps")


class ReductionConfig(_Kept):
    fields = ("reductions", "abs_reductions", "norms", "abs_norms", "save_raw_tensor", "save_shape")


class CollectionConfig(_Kept):
    fields = ("name", "parameters")


class CollectionKeys:
    """The collection names smdebug knows; kennel's debugger captures losses, weights, biases, gradients,
    activations and inputs (see ``debug.modes`` in a job's config)."""

    DEFAULT = "default"
    ALL = "all"
    INPUTS = "inputs"
    OUTPUTS = "outputs"
    WEIGHTS = "weights"
    GRADIENTS = "gradients"
    LOSSES = "losses"
    BIASES = "biases"
    LAYERS = "layers"
    SCALARS = "scalars"
    SM_METRICS = "sm_metrics"
    OPTIMIZER_VARIABLES = "optimizer_variables"
    METRICS = "metrics"


class Collection:
    """A named group of tensors, as a script configures one (``hook.get_collection("relu").include("relu")``).
    Kept for the script's own use; the job's ``debug:`` settings decide what is captured."""

    def __init__(
        self,
        name: str,
        include_regex: list[str] | None = None,
        tensor_names: set[str] | None = None,
        reduction_config: ReductionConfig | None = None,
        save_config: SaveConfig | None = None,
        save_histogram: bool = True,
    ) -> None:
        self.name = name
        self.include_regex = list(include_regex or [])
        self._tensor_names = set(tensor_names or ())
        self.reduction_config = reduction_config
        self.save_config = save_config
        self.save_histogram = save_histogram

    @property
    def tensor_names(self) -> set[str]:
        return self._tensor_names

    @tensor_names.setter
    def tensor_names(self, names: set[str]) -> None:
        self._tensor_names = set(names)

    def include(self, patterns: str | list[str]) -> None:
        self.include_regex += [patterns] if isinstance(patterns, str) else list(patterns)

    def add_tensor_name(self, name: str) -> None:
        self._tensor_names.add(name)

    def remove_tensor_name(self, name: str) -> None:
        self._tensor_names.discard(name)

    def has_tensor_name(self, name: str) -> bool:
        return name in self._tensor_names

    def add_module_tensors(self, module: Any, inputs: bool = False, outputs: bool = True) -> None:
        """smdebug saves a module's inputs and outputs this way; kennel's ``activations`` collection holds the
        inputs and outputs of every activation layer."""
        self.include(f"{type(module).__name__}_{'input' if inputs else 'output'}")

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, include_regex={self.include_regex!r})"

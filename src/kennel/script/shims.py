"""The folders a script's ``PYTHONPATH`` starts with, so that the import names SageMaker scripts write resolve to
kennel inside its process: ``shim/`` holds ``smdebug`` (kennel's hook, :mod:`kennel.script.hook`), and, only where
the SageMaker Python SDK is not installed, ``shim_sagemaker/`` holds a ``sagemaker`` whose names are placeholders,
so that a script's notebook-side imports (``from sagemaker.debugger import Rule``) succeed. Torch-free: the
command line calls it before the script starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMDEBUG_SHIM = HERE / "shim"
SAGEMAKER_SHIM = HERE / "shim_sagemaker"


def shim_paths() -> list[str]:
    """The folders to put first on the script's ``PYTHONPATH``, in order."""
    paths = [str(SMDEBUG_SHIM)]
    if not sagemaker_installed():
        paths.append(str(SAGEMAKER_SHIM))
    return paths


def sagemaker_installed() -> bool:
    """Whether a ``sagemaker`` package other than kennel's placeholders can be imported. A folder named
    ``sagemaker`` without an ``__init__.py`` (a namespace package, such as a project's notebooks folder) is not
    the SDK."""
    try:
        spec = importlib.util.find_spec("sagemaker")
    except (ImportError, ValueError):  # a broken sagemaker module in sys.modules, or one without a spec
        return False
    if spec is None or spec.origin in (None, "namespace"):
        return False
    return not Path(spec.origin).resolve().is_relative_to(HERE.parent)

"""kennel's debugger: hooks that capture tensors' reductions while a job trains, rules that judge them as they
come, findings a person can act on, and the records for one's own analysis.

    from kennel.debugger import load_records
    records = load_records("latest")
    steps, norms = records.values("1.weight/grad", "norm")

Names load lazily, so reading a job's config does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DebugConfig": "kennel.debugger.config",
    "Debugger": "kennel.debugger.hooks",
    "DebugRecords": "kennel.debugger.store",
    "load_records": "kennel.debugger.store",
    "DEBUGGER_RULES": "kennel.debugger.rules",
    "Rule": "kennel.rules",
    "Window": "kennel.debugger.window",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

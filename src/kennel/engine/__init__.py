"""The training loop and the observer interface it emits events to. Its names load on first use, so that a
module of the package without PyTorch in it (:mod:`kennel.engine.clock`'s phases, which the profiler's pages read)
imports without it."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LoopConfig": "kennel.engine.trainer",
    "LoopState": "kennel.engine.state",
    "Observer": "kennel.engine.observer",
    "ObserverList": "kennel.engine.observer",
    "StopTraining": "kennel.engine.observer",
    "Trainer": "kennel.engine.trainer",
    "evaluate": "kennel.engine.trainer",
}

if TYPE_CHECKING:
    from kennel.engine.observer import Observer, ObserverList, StopTraining
    from kennel.engine.state import LoopState
    from kennel.engine.trainer import LoopConfig, Trainer, evaluate


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kennel.engine' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["LoopConfig", "LoopState", "Observer", "ObserverList", "StopTraining", "Trainer", "evaluate"]

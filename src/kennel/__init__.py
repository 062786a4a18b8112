"""kennel: train, tune, debug, profile and serve image classifiers on your own hardware.

The public API is small and imports lazily, so ``import kennel`` stays fast:

    from kennel import TrainConfig, train
    record = train(TrainConfig.model_validate({"data": {"root": "dogImages"}}))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "TrainConfig": "kennel.config",
    "train": "kennel.job",
    "resume": "kennel.job",
    "load_job": "kennel.jobs",
    "list_jobs": "kennel.jobs",
    "create_model": "kennel.models",
    "list_models": "kennel.models",
    "Predictor": "kennel.predictor",
    "Trainer": "kennel.engine",
    "Observer": "kennel.engine",
}

if TYPE_CHECKING:  # for type checkers and IDEs; runtime access goes through __getattr__
    from kennel.config import TrainConfig
    from kennel.engine import Observer, Trainer
    from kennel.job import resume, train
    from kennel.jobs import list_jobs, load_job
    from kennel.models import create_model, list_models
    from kennel.predictor import Predictor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kennel' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [*_EXPORTS, "__version__"]

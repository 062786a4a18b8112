"""The training loop and the observer interface it emits events to."""

from kennel.engine.observer import Observer, ObserverList, StopTraining
from kennel.engine.state import LoopState
from kennel.engine.trainer import LoopConfig, Trainer, evaluate

__all__ = ["LoopConfig", "LoopState", "Observer", "ObserverList", "StopTraining", "Trainer", "evaluate"]

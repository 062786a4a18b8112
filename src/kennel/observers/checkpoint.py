"""Atomic checkpoints at each epoch's end (what ``--resume`` continues from), and the best weights so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kennel.atomic import atomic_write
from kennel.engine import LoopState, Observer


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint is tensors and plain containers; never unpickle arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


class Checkpointer(Observer):
    """Writes ``last.pt`` after every epoch and ``best.pt`` (model weights only) when ``monitor`` improves."""

    def __init__(self, folder: Path, monitor: str = "valid_accuracy", mode: str = "max") -> None:
        self.folder = Path(folder)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def on_epoch_end(self, state: LoopState) -> None:
        value = state.epoch_metrics.get(self.monitor)
        if value is not None and (self.best is None or self.sign * value > self.sign * self.best):
            self.best, self.best_epoch = value, state.epoch + 1
            save_checkpoint(self.best_path, {"model": state.model.state_dict(), "epoch": self.best_epoch})
        # After updating best: the saved observer state must already include this epoch.
        save_checkpoint(self.last_path, state.snapshot())

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

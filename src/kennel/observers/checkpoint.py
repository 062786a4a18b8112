"""Atomic checkpoints at each epoch's end (what ``--resume`` continues from), and the best weights so far.

The epoch before the last is kept too (``previous.pt``): writes are atomic, but a file can still be damaged after
it was written (a full disk while copying a job, a bad sector), and a resume then continues from the one before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from kennel.atomic import atomic_write
from kennel.engine import LoopState, Observer
from kennel.errors import Failure

log = logging.getLogger(__name__)

LAST, PREVIOUS, BEST = "last.pt", "previous.pt", "best.pt"


class CheckpointError(Failure):
    """No checkpoint of a job can be read; the message names the files and why."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint is tensors and plain containers; never unpickle arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def _readable(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        return load_checkpoint(path), ""
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:  # truncated, overwritten, not a checkpoint: all mean "cannot continue from it"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"


def resume_checkpoint(folder: Path) -> dict[str, Any] | None:
    """What a resumed job continues from: ``last.pt``, or ``previous.pt`` where the last is damaged (saying so);
    None where the job never finished an epoch. Raises :class:`CheckpointError` when neither can be read."""
    folder = Path(folder)
    if not (folder / LAST).exists() and not (folder / PREVIOUS).exists():
        return None
    last, why = _readable(folder / LAST)
    if last is not None:
        return last
    previous, why_previous = _readable(folder / PREVIOUS)
    if previous is not None:
        log.warning(
            "%s is damaged (%s); resuming from %s, one epoch earlier (epoch %s)",
            folder / LAST,
            why,
            PREVIOUS,
            previous.get("epoch", "?"),
        )
        return previous
    raise CheckpointError(
        f"cannot resume from {folder}: {LAST} is damaged ({why}) and {PREVIOUS} is {why_previous or 'unreadable'}; "
        "start a new job with the same config (kennel train --config JOB/config.yaml)"
    )


def best_weights(folder: Path) -> dict[str, Any] | None:
    """The model weights of the best epoch so far (``best.pt``), or None where no epoch was validated."""
    path = Path(folder) / BEST
    return load_checkpoint(path)["model"] if path.is_file() else None


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
        return self.folder / LAST

    @property
    def best_path(self) -> Path:
        return self.folder / BEST

    def on_epoch_end(self, state: LoopState) -> None:
        value = state.epoch_metrics.get(self.monitor)
        if value is not None and (self.best is None or self.sign * value > self.sign * self.best):
            self.best, self.best_epoch = value, state.epoch + 1
            save_checkpoint(self.best_path, {"model": state.model.state_dict(), "epoch": self.best_epoch})
        # After updating best: the saved observer state must already include this epoch.
        if self.last_path.is_file():
            os.replace(self.last_path, self.folder / PREVIOUS)
        save_checkpoint(self.last_path, state.snapshot())

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

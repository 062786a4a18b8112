"""Stop when the monitored metric has not improved for ``patience`` epochs."""

from __future__ import annotations

from typing import Any

from kennel.engine import LoopState, Observer


class EarlyStopping(Observer):
    def __init__(self, patience: int, monitor: str = "valid_loss", mode: str = "min", min_delta: float = 0.0):
        self.patience = patience
        self.monitor = monitor
        self.sign = -1.0 if mode == "min" else 1.0
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def on_epoch_end(self, state: LoopState) -> None:
        value = state.epoch_metrics.get(self.monitor)
        if value is None:
            return
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            state.request_stop(
                f"early stopping: {self.monitor} did not improve on {self.best:.4g} for {self.patience} epochs"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]

"""The small state the loop shares with observers. Observers read it; only ``request_stop`` writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class LoopState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    steps_per_epoch: int
    epoch: int = 0  # the epoch running now, counted from 0
    step: int = 0  # step within the epoch
    global_step: int = 0  # optimizer steps since the job began
    mode: str = "TRAIN"  # TRAIN while fitting, EVAL during validation
    batch_size: int = 0
    loss: float | None = None  # the last batch's loss (a training batch, or a validation batch in EVAL)
    batch: Any = field(default=None, repr=False)  # the last batch, on device: (inputs, targets)
    outputs: torch.Tensor | None = field(default=None, repr=False)
    lr: float = 0.0
    step_metrics: dict[str, float] = field(default_factory=dict)  # of the last logged step
    step_times: dict[str, float] = field(default_factory=dict)  # seconds per phase of the last step
    epoch_metrics: dict[str, float] = field(default_factory=dict)  # of the last finished epoch
    history: list[dict[str, float]] = field(default_factory=list)  # every finished epoch's metrics
    stop_reason: str | None = None
    stop_status: str = "stopped"  # the status a requested stop ends with ("pruned" for a tuning pruner)
    status: str = "running"  # running, completed, stopped, pruned, failed
    snapshot: Any = field(default=None, repr=False)  # () -> dict: everything a checkpoint needs

    def request_stop(self, reason: str, status: str = "stopped") -> None:
        """Ask the loop to stop after the current step (early stopping, a debugger rule, a pruner); the fit
        then ends with ``status``. The first request wins."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_status = reason, status

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

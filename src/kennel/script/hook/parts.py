"""What the hook keeps of the script's loop: the state kennel's observers read, a step from its forward to its
end, the sums an epoch's metrics come from, and how the script's optimizer and batches are recognised."""

from __future__ import annotations

import functools
import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kennel.engine.state import LoopState


class StoppedByRule(SystemExit):
    """Ends the script when a debugger rule with ``stop`` set has fired: exit status 3, as for kennel train."""


@dataclass(eq=False)
class ScriptState(LoopState):
    """The loop's state as the hook keeps it; tells the hook the moment a rule asks to stop (from whichever
    thread the rule ran on: the debugger's clock rules run on a timer)."""

    on_stop: Callable[[str], None] | None = field(default=None, repr=False)

    def request_stop(self, reason: str, status: str = "stopped") -> None:
        first = self.stop_reason is None
        super().request_stop(reason, status)
        if first and self.on_stop is not None:
            self.on_stop(reason)


class StandIn:
    """Stands in for the script's optimizer until one steps: what the debugger captures are the parameters that
    require a gradient."""

    def __init__(self, module: nn.Module) -> None:
        self.param_groups = [{"params": [p for p in module.parameters() if p.requires_grad], "lr": 0.0}]


@dataclass(eq=False)
class Step:
    """One forward of the registered module, from its start to the end of its optimizer step (TRAIN) or its
    loss (EVAL)."""

    mode: str  # "TRAIN" or "EVAL": the debugger's modes
    start: float
    inputs: Any = None
    outputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_value: float | None = None
    forward_end: float | None = None
    backward_end: float | None = None
    lr: float | None = None
    reported: bool = False  # on_after_backward (or, EVAL, on_eval_batch_end) sent
    ready: bool = False  # on_before_optimizer_step sent


@dataclass
class Phase:
    """Sums over one mode's steps of an epoch, for its mean loss and accuracy."""

    loss_sum: float = 0.0
    loss_samples: int = 0
    correct: torch.Tensor | int = 0  # summed on the device: read once, at the epoch's end
    classified: int = 0

    def add(self, loss: float | None, outputs: torch.Tensor | None, targets: Any, samples: int) -> None:
        if loss is not None:
            self.loss_sum += loss * samples
            self.loss_samples += samples
        if classified(outputs, targets):
            self.correct = self.correct + (outputs.argmax(1) == targets).sum()
            self.classified += len(targets)

    def metrics(self, prefix: str) -> dict[str, float]:
        metrics = {}
        if self.loss_samples:
            metrics[f"{prefix}_loss"] = self.loss_sum / self.loss_samples
        if self.classified:
            metrics[f"{prefix}_accuracy"] = float(self.correct) / self.classified
        return metrics


@dataclass
class Epoch:
    started: float
    train: Phase = field(default_factory=Phase)
    valid: Phase = field(default_factory=Phase)
    evaluated: bool = False  # an EVAL step came after the training phase


def first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a forward's arguments or output lead with: itself, or the first in a tuple, list or dict."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((item for item in items if isinstance(item, torch.Tensor)), None)


def classified(outputs: torch.Tensor | None, targets: Any) -> bool:
    """Whether a batch is a classifier's: a score per class and a label per sample."""
    return (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.dim() == 2
        and targets.dim() == 1
        and len(outputs) == len(targets)
        and not targets.is_floating_point()
    )


class ModuleOptimizers:
    """Which optimizers train the registered module (a script may hold others), by the ids of its parameters."""

    def __init__(self, module: nn.Module) -> None:
        self.parameters = {id(p) for p in module.parameters()}
        self._known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> trains the module

    def trains(self, optimizer: torch.optim.Optimizer) -> bool:
        known = self._known.get(optimizer)
        if known is None:
            known = any(id(p) in self.parameters for group in optimizer.param_groups for p in group["params"])
            self._known[optimizer] = known
        return known

    def find(self) -> torch.optim.Optimizer | None:
        """The script's optimizer of the module, among the live objects; None before it builds one."""
        optimizers = (obj for obj in gc.get_objects() if issubclass(type(obj), torch.optim.Optimizer))
        return next((o for o in optimizers if self.trains(o)), None)


def guarded(method: Callable) -> Callable:
    """A hook point that fails from a fault of kennel's stops capturing (the hook's ``_broke``) instead of ending
    the user's training; a closed hook does nothing."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            return None
        try:
            return method(self, *args, **kwargs)
        except StoppedByRule:
            raise
        except Exception as exc:
            self._broke(exc)
            return None

    return guarded

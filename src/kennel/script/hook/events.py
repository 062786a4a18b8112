"""The events of kennel's own loop, made from the steps the hook's points delimit in the user's loop: the state
kennel's observers read is filled before each event, as kennel's loop fills it, and the epoch's phases and the
profiler's step records are kept. :class:`~kennel.script.hook.loop.ScriptLoop` decides when a step begins and
ends; this decides what each end means to the debugger and the profiler."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from kennel.script.hook.parts import Epoch, ScriptState, StandIn, Step, classified
from kennel.script.hook.steps import StepRecords, step_record

if TYPE_CHECKING:
    from kennel.debugger.hooks import Debugger


class LoopEvents:
    """The loop's events for the debugger (rank 0, when the job asked for it) and the step records (every rank,
    when the profiler asked for them)."""

    def __init__(self, debugger: Debugger | None, records: StepRecords | None) -> None:
        self.debugger, self.records = debugger, records
        self.state: ScriptState | None = None  # from the first step on
        self.epoch: Epoch | None = None
        self.since = time.perf_counter()  # the previous step's end, or the set_mode that began a phase

    def emit(self, event: str) -> None:
        if self.debugger is not None:
            getattr(self.debugger, event)(self.state)

    def fit_start(
        self, module: nn.Module, optimizer: torch.optim.Optimizer | None, on_stop: Callable[[str], None]
    ) -> None:
        first = next(module.parameters(), None)
        self.state = ScriptState(
            model=module,
            optimizer=optimizer if optimizer is not None else StandIn(module),
            device=first.device if first is not None else torch.device("cpu"),
            epochs=0,
            steps_per_epoch=0,
            lr=float(optimizer.param_groups[0].get("lr", 0.0)) if optimizer is not None else 0.0,
            on_stop=on_stop,
        )
        self.emit("on_fit_start")

    def begin_train(self, now: float) -> None:
        if self.epoch is not None and self.epoch.evaluated:
            self.end_epoch(now)
        if self.epoch is None:
            self.epoch = Epoch(now)
            self.state.step, self.state.mode = 0, "TRAIN"
            self.emit("on_epoch_start")

    def _fill(self, step: Step) -> None:
        """Put ``step``'s batch, outputs and loss into the state, as kennel's loop does before an event."""
        state = self.state
        if step.loss is not None and step.loss_value is None:
            loss = step.loss
            step.loss_value = float(loss if loss.numel() == 1 else loss.float().mean())
        state.loss = step.loss_value
        state.batch = (step.inputs, step.targets)
        state.outputs = step.outputs if classified(step.outputs, step.targets) else None
        sized = step.targets if isinstance(step.targets, torch.Tensor) and step.targets.dim() else step.inputs
        state.batch_size = len(sized) if isinstance(sized, torch.Tensor) and sized.dim() else 0

    def report_backward(self, step: Step) -> None:
        if not step.reported:
            step.reported = True
            self.state.mode = "TRAIN"
            self._fill(step)
            self.emit("on_after_backward")

    def ready(self, step: Step) -> None:
        if not step.ready:
            step.ready = True
            self.emit("on_before_optimizer_step")

    def end_step(self, step: Step, end: float) -> None:
        if step.mode == "TRAIN":
            self._end_train(step, end)
        else:
            self._end_eval(step)
        self.since = end

    def _end_train(self, step: Step, end: float) -> None:
        state = self.state
        self.report_backward(step)
        forward = step.forward_end or step.start
        backward = step.backward_end or forward
        if step.lr is not None:
            state.lr = step.lr
        state.step_times = {
            "data": step.start - self.since,
            "transfer": 0.0,
            "forward": forward - step.start,
            "backward": backward - forward,
            "optimizer": end - backward,
        }
        state.step += 1
        state.global_step += 1
        self.epoch.train.add(step.loss_value, step.outputs, step.targets, state.batch_size)
        self.emit("on_batch_end")
        if self.records is not None:
            self.records.add(
                step_record(state.global_step, state.epoch + 1, self.since, step.start, forward, backward, end)
            )

    def _end_eval(self, step: Step) -> None:
        state = self.state
        state.mode = "EVAL"
        self._fill(step)
        step.reported = True
        if self.epoch is not None:
            self.epoch.valid.add(step.loss_value, step.outputs, step.targets, state.batch_size)
        self.emit("on_eval_batch_end")
        state.mode = "TRAIN"

    def end_epoch(self, now: float) -> None:
        epoch, self.epoch = self.epoch, None
        state = self.state
        metrics = {"epoch": state.epoch + 1, **epoch.train.metrics("train"), **epoch.valid.metrics("valid")}
        metrics.update(lr=state.lr, epoch_seconds=now - epoch.started)
        state.epoch_metrics = metrics
        state.history.append(metrics)
        state.mode = "TRAIN"
        self.emit("on_epoch_end")
        if self.records is not None:
            self.records.flush()
        state.epoch += 1

    def fit_end(self, error: BaseException | None) -> None:
        """The job's loop is over: ``on_exception`` with the error that ended it, else ``on_fit_end``."""
        if self.debugger is not None and self.state is not None:
            if error is not None:
                self.debugger.on_exception(self.state, error)
            else:
                self.debugger.on_fit_end(self.state)
        if self.records is not None:
            self.records.flush()

"""The user's training loop, seen through the hook's points, as the events of kennel's own loop: what lets
kennel's debugger (an engine ``Observer``) and the profiler's step timeline run inside a script kennel did not
write.

Where each event comes from (a step is one forward of the registered module, counted per mode as smdebug does):

    forward of the registered module, TRAIN    a step begins (its inputs: the forward's first tensor argument);
                                               the first one of the job: ``on_fit_start``; the first of a
                                               training phase: ``on_epoch_start``
    the registered loss's forward              the step's loss, its targets and the outputs they are compared to
    the optimizer's step (pre-step hook)       ``on_after_backward``, then ``on_before_optimizer_step``
    the optimizer's step (post-step hook)      ``on_batch_end``: the step ends
    forward + loss, EVAL                       ``on_eval_batch_end``
    TRAIN again after EVAL steps, or the end   ``on_epoch_end``, with the phases' mean losses and accuracies
    ``close()`` or the interpreter's exit      ``on_fit_end`` (``on_exception`` after an uncaught exception)

A script has no epochs, so a training phase and the evaluation that follows it make one: that is what the epoch
rules (Overfit, Overtraining, ClassImbalance) compare. The optimizer is the one the script built (found among
the live objects at the first step) or, until one steps, a stand-in holding the parameters that require a
gradient. A script that updates its weights by hand has its gradients read when its backward pass ends.
With the mode unset (``GLOBAL``), a forward of a module in training mode with gradients on is a TRAIN step and
any other an EVAL step; so is a forward in TRAIN mode with gradients off (a validation pass that kept the mode).
PREDICT steps are counted and not judged.

A rule with ``stop`` set ends the script: ``stop.json`` is written the moment it fires, and the next forward or
optimizer step closes the debugger and raises :class:`StoppedByRule` (exit status 3)."""

from __future__ import annotations

import atexit
import functools
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from kennel.atomic import atomic_write_json
from kennel.script.advice import in_script_terms
from kennel.script.contract import STOPPED_BY_RULE
from kennel.script.hook.events import LoopEvents
from kennel.script.hook.names import ModeKeys
from kennel.script.hook.parts import ModuleOptimizers, ScriptState, Step, StoppedByRule, first_tensor, guarded
from kennel.script.hook.steps import StepRecords, steps_file

if TYPE_CHECKING:
    from kennel.debugger.hooks import Debugger
    from kennel.script.hook_settings import HookSettings

log = logging.getLogger("kennel.script.hook")
# Autograd's engine runs a queued callback when the backward pass it runs has ended (DistributedDataParallel
# waits for its gradients the same way). Without it, the backward pass ends, for the step timeline, at the
# optimizer's step.
_ENGINE = torch.autograd.Variable._execution_engine


class ScriptLoop:
    """The process's one hook state: the mode and step counts, and, when the job asked for them (``settings``),
    the debugger (rank 0) and the step records (every rank). Without settings it counts nothing and captures
    nothing."""

    def __init__(self, settings: HookSettings | None = None, rank: int = 0) -> None:
        self.settings, self.rank = settings, rank
        self.mode = ModeKeys.GLOBAL
        self.mode_steps: dict[ModeKeys, int] = {ModeKeys.GLOBAL: 0}
        self.step = 0  # forwards of the registered module, every mode
        debugger: Debugger | None = None
        records: StepRecords | None = None
        if settings is not None:
            if rank == 0 and settings.debug.enabled:
                from kennel.debugger.hooks import Debugger

                debugger = Debugger(
                    settings.debug_dir, settings.debug, classes=settings.classes, phrasing=in_script_terms
                )
            if settings.profiler_steps is not None:
                records = StepRecords(steps_file(settings.profiler_steps, rank))
        self.events = LoopEvents(debugger, records)
        self.module: nn.Module | None = None
        self.closed = False
        self._losses: set[int] = set()  # ids of the registered loss modules
        self._handles: list[Any] = []
        self._optimizers: ModuleOptimizers | None = None  # from the first step on
        self._manual = False  # no optimizer: gradients are read when the backward pass ends
        self._open: Step | None = None
        if self.active:
            atexit.register(self._at_exit)

    @property
    def debugger(self) -> Debugger | None:
        return self.events.debugger

    @property
    def state(self) -> ScriptState | None:
        return self.events.state

    @property
    def active(self) -> bool:
        return self.events.debugger is not None or self.events.records is not None

    # --- what the script calls ------------------------------------------------------------------------

    def register_module(self, module: nn.Module) -> None:
        if not self.active or self.closed or module is self.module:
            return
        if self.module is not None:
            log.info(
                "kennel: the hook follows %s, the first module registered; %s is not followed",
                type(self.module).__name__,
                type(module).__name__,
            )
            return
        self.module = module
        self.events.since = time.perf_counter()  # the first step's data time begins here, not at the hook's making
        self._handles += [
            module.register_forward_pre_hook(self._before_forward),
            module.register_forward_hook(self._after_forward),
            register_optimizer_step_pre_hook(self._before_optimizer_step),
            register_optimizer_step_post_hook(self._after_optimizer_step),
        ]

    def register_loss(self, module: nn.Module) -> None:
        if not self.active or self.closed or id(module) in self._losses:
            return
        self._losses.add(id(module))
        self._handles.append(module.register_forward_hook(self._after_loss))

    @guarded
    def set_mode(self, mode: ModeKeys) -> None:
        if mode is not self.mode and self._open is not None:
            self._end_step(self._open_end())
        self.mode = mode
        self.mode_steps.setdefault(mode, 0)
        self.events.since = time.perf_counter()

    @guarded
    def record_loss(self, loss: torch.Tensor) -> bool:
        """A loss the script computed without a registered loss module (``record_tensor_value("loss", ...)``):
        the running step's loss, unless it has one; returns whether it became that."""
        step = self._open
        if step is None or step.loss is not None:
            return False
        self._take_loss(step, loss.detach())
        return True

    def close(self) -> None:
        try:
            self._finish("completed")
        except Exception:  # the records are kennel's business: the script's own end goes on
            log.warning("kennel: the hook could not close its records", exc_info=True)

    def position(self) -> tuple[str, int, int] | None:
        """Where a tensor the script saves now belongs: the debugger's mode, the global training step and the
        step within the mode (the step running, else the last one); None before the first step."""
        state = self.state
        if state is None:
            return None
        running = self._open
        if self.mode is ModeKeys.TRAIN or (self.mode is ModeKeys.GLOBAL and self.module.training):
            step = state.global_step if running is not None and running.mode == "TRAIN" else state.global_step - 1
            return "TRAIN", max(step, 0), max(step, 0)
        eval_step = self.debugger.eval_step if self.debugger is not None else 0
        ran = eval_step if running is not None and running.mode == "EVAL" else eval_step - 1
        return "EVAL", state.global_step - 1, max(ran, 0)

    # --- the registered module's forward --------------------------------------------------------------

    @guarded
    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        now = time.perf_counter()
        self._raise_if_stopped()
        self.step += 1
        self.mode_steps[self.mode] = self.mode_steps.get(self.mode, 0) + 1
        if self.state is None:
            self._fit_start(module)
        if self._open is not None:  # no optimizer step ended it (a script that accumulates, or validates in TRAIN)
            self._end_step(self._open_end())
        mode = self._debug_mode(module)
        if mode == "TRAIN":
            self.events.begin_train(now)
        elif mode == "EVAL" and self.events.epoch is not None:
            self.events.epoch.evaluated = True
        if mode is not None:
            self._open = Step(mode, now, first_tensor(args))
        self._raise_if_stopped()

    @guarded
    def _after_forward(self, module: nn.Module, args: tuple, output: Any) -> None:
        step = self._open
        if step is None:
            return
        step.forward_end = time.perf_counter()
        tensor = first_tensor(output)
        if tensor is None:
            return
        step.outputs = tensor.detach()
        if step.mode == "TRAIN" and tensor.requires_grad and hasattr(_ENGINE, "queue_callback"):
            tensor.register_hook(functools.partial(self._output_grad, step))

    def _debug_mode(self, module: nn.Module) -> str | None:
        """The debugger's mode of a forward in the script's mode (see the module's docstring)."""
        if self.mode is ModeKeys.PREDICT:
            return None
        if self.mode is ModeKeys.EVAL or (self.mode is ModeKeys.GLOBAL and not module.training):
            return "EVAL"
        return "TRAIN" if torch.is_grad_enabled() else "EVAL"

    def _fit_start(self, module: nn.Module) -> None:
        self._optimizers = ModuleOptimizers(module)
        optimizer = self._optimizers.find()
        self._manual = optimizer is None
        self.events.fit_start(module, optimizer, self._on_stop)

    # --- the loss, the backward pass, the optimizer ---------------------------------------------------

    @guarded
    def _after_loss(self, module: nn.Module, args: tuple, output: Any) -> None:
        step = self._open
        if step is None or step.loss is not None or not isinstance(output, torch.Tensor):
            return
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            step.targets = args[1]
        if args and isinstance(args[0], torch.Tensor):
            step.outputs = args[0].detach()  # what the targets are compared with (a model may return more)
        self._take_loss(step, output.detach())

    def _take_loss(self, step: Step, loss: torch.Tensor) -> None:
        step.loss = loss
        step.forward_end = time.perf_counter()
        if step.mode == "EVAL":
            self._end_step(step.forward_end)

    @guarded
    def _output_grad(self, step: Step, grad: torch.Tensor) -> None:
        # The backward pass reached the module's output; the engine calls back once the whole pass has ended.
        if step is self._open and step.backward_end is None:
            _ENGINE.queue_callback(functools.partial(self._backward_done, step))

    @guarded
    def _backward_done(self, step: Step) -> None:
        step.backward_end = time.perf_counter()
        if self._manual and step is self._open:  # no optimizer step will come: the gradients are read now
            self.events.report_backward(step)
            self.events.ready(step)

    def _owns(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer`` trains the registered module (a script may hold others)."""
        return self._optimizers is not None and self._optimizers.trains(optimizer)

    @guarded
    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not self._owns(optimizer):
            return
        self._raise_if_stopped()
        self.state.optimizer, self._manual = optimizer, False
        step = self._open
        if step is None or step.mode != "TRAIN":
            return
        step.lr = float(optimizer.param_groups[0].get("lr", 0.0))
        if step.backward_end is None:
            step.backward_end = time.perf_counter()
        self.events.report_backward(step)
        self.events.ready(step)

    @guarded
    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not self._owns(optimizer):
            return
        step = self._open
        if step is not None and step.mode == "TRAIN":
            self._end_step(time.perf_counter())
        self._raise_if_stopped()

    # --- the end of a step, stopping and the end of the job ----------------------------------------

    def _open_end(self) -> float:
        """When the open step's own work ended, for a step no optimizer step (or loss) ended."""
        step = self._open
        return step.backward_end or step.forward_end or step.start

    def _end_step(self, end: float) -> None:
        step, self._open = self._open, None
        self.events.end_step(step, end)

    def _on_stop(self, reason: str) -> None:
        """A rule with ``stop`` set fired (on any thread): say so in the job folder at once, so that the job
        knows why even if the script never reaches another hook point."""
        fired = self.debugger.runner.fired
        rule = next((r.name for r in self.debugger.rules if r.stop and r.name in fired), None)
        atomic_write_json(self.settings.stop_file, {"reason": reason, "rule": rule})

    def _raise_if_stopped(self) -> None:
        state = self.state
        if state is None or not state.should_stop or self.closed:
            return
        log.warning("kennel: the script stops (exit status %d): %s", STOPPED_BY_RULE, state.stop_reason)
        self._finish("stopped")
        raise StoppedByRule(STOPPED_BY_RULE)

    def _finish(self, how: str, error: BaseException | None = None) -> None:
        """End the job's loop once: ``completed`` (close() or a normal exit: the open step and epoch end),
        ``stopped`` (a rule: as kennel's loop, the epoch is left unfinished) or ``failed``."""
        if self.closed:
            return
        try:
            if self.state is not None and how == "completed":
                if self._open is not None:
                    self._end_step(self._open_end())
                if self.events.epoch is not None:
                    self.events.end_epoch(time.perf_counter())
        finally:
            self.closed = True
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self.events.fit_end((error or RuntimeError("the script failed")) if how == "failed" else None)

    def _at_exit(self) -> None:
        # An uncaught exception has been printed, and kept in sys.last_value, by the time atexit runs.
        error = getattr(sys, "last_value", None)
        if error is None:
            self.close()
            return
        try:
            self._finish("failed", error)
        except Exception:
            log.warning("kennel: the hook could not close its records", exc_info=True)

    def _broke(self, error: Exception) -> None:
        log.warning("kennel: the hook failed and captures nothing more; the script goes on", exc_info=error)
        try:
            self._finish("failed", error)
        except Exception:
            self.closed = True

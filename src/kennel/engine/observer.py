"""Observers receive the loop's events. Every hook is a no-op here; an observer overrides what it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kennel.engine.state import LoopState

EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_batch_end",
    "on_eval_batch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_exception",
)


# The job around the loop: kennel.job calls these, the loop never does. A tracker opens and closes its run here,
# the profiler stops sampling and writes its page, the report is written once the record is final.
JOB_EVENTS = ("on_job_start", "on_job_end")


class StopTraining(Exception):
    """Raised by an observer to stop at once (the loop ends with status ``stopped``)."""


class Observer:
    """Base class: override the hooks you need. ``state_dict`` is saved in checkpoints and restored on resume."""

    def on_fit_start(self, state: LoopState) -> None: ...

    def on_epoch_start(self, state: LoopState) -> None: ...

    def on_after_backward(self, state: LoopState) -> None: ...

    def on_before_optimizer_step(self, state: LoopState) -> None: ...

    def on_batch_end(self, state: LoopState) -> None:
        """After a training step; ``state.step_times`` holds its phases (see :mod:`kennel.engine.clock`)."""

    def on_eval_batch_end(self, state: LoopState) -> None:
        """After each validation batch, with ``state.mode == "EVAL"`` and the batch's inputs, outputs and loss."""

    def on_validation_end(self, state: LoopState, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, state: LoopState) -> None: ...

    def on_fit_end(self, state: LoopState) -> None: ...

    def on_exception(self, state: LoopState, error: BaseException) -> None: ...

    def on_job_start(self, record: Any) -> None:
        """Once the job's record (a :class:`~kennel.jobs.JobRecord`) says it runs, before data or model load."""

    def on_job_end(self, record: Any) -> None:
        """After the job's final record is written, on every path (completed, stopped, pruned, failed): close
        what the observer holds open and write what it reports. Raising here means the job lost a result (its
        tracking run, say) and turns it ``failed`` with the error as the cause; an observer whose output is
        optional (a report page ``kennel report`` writes again) catches its own errors and logs them."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    @property
    def key(self) -> str:
        """The name its state is saved under in a checkpoint."""
        return type(self).__name__


class ObserverList:
    """Dispatches an event to every observer, each call inside a profiler span named after the observer,
    so an observer's own cost shows in a profile."""

    def __init__(self, observers: list[Observer]) -> None:
        keys = [o.key for o in observers]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise ValueError(f"observers share a key: {sorted(duplicates)}")
        self.observers = list(observers)

    def emit(self, event: str, state: LoopState, *args: Any) -> None:
        import torch  # the loop has it loaded; an observer watching a script from outside (kennel run) needs none

        # A span costs about 10 us on a 2-core CPU even when no profiler records it: four observers times three
        # events came to about 125 us, near a tenth of a cached-feature step. So spans open only while one records.
        spans = torch.autograd._profiler_enabled()
        for observer in self.observers:
            hook = getattr(observer, event)
            if not spans:
                hook(state, *args)
                continue
            with torch.profiler.record_function(f"kennel.observer.{observer.key}.{event}"):
                hook(state, *args)

    def state_dict(self) -> dict[str, Any]:
        return {o.key: o.state_dict() for o in self.observers}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for observer in self.observers:
            if observer.key in states:
                observer.load_state_dict(states[observer.key])

    def find(self, kind: type) -> list[Observer]:
        return [o for o in self.observers if isinstance(o, kind)]

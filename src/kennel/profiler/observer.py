"""The profiler's observer: times every step, marks the loop's start and end, steps the torch.profiler window
and runs the rules every ``check_every_s`` seconds (at a step's or an epoch's end) and when the loop ends.

Not at every epoch's end: a head trained on cached features runs an epoch in a tenth of a second, and a check
(a few milliseconds) each time would cost more than all the step records together."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kennel.engine import LoopState, Observer

if TYPE_CHECKING:
    from kennel.profiler.session import ProfilerSession

FLUSH_SECONDS = 1.0  # step records reach the disk at least this often (and at each epoch's end)


class ProfilerObserver(Observer):
    """Each step's record: its wall time (since the previous step ended, so observers' time counts as
    ``other``) and the loop clock's phases. On CUDA the clock reports a step's phases one step late; the record
    waits for them, and the last step of an epoch, whose phases the clock drops, keeps only its wall time."""

    def __init__(self, session: ProfilerSession, check_every_s: float = 10.0) -> None:
        self.session = session
        self.check_every_s = check_every_s
        self._buffer: list[dict] = []
        self._pending: dict | None = None  # CUDA: the step waiting for its phases
        self._last = self._flushed = self._checked = time.perf_counter()
        self._lagged = False

    @property
    def key(self) -> str:
        return "Profiler"

    def on_fit_start(self, state: LoopState) -> None:
        self._lagged = state.device.type == "cuda"
        self.session.event("fit_start", state.global_step)
        if self.session.trace is not None:
            self.session.trace.start()
        self._checked = time.perf_counter()

    def on_epoch_start(self, state: LoopState) -> None:
        self._last = time.perf_counter()

    def on_batch_end(self, state: LoopState) -> None:
        now = time.perf_counter()
        record = {"step": state.global_step, "epoch": state.epoch + 1, "t": time.time(), "wall": now - self._last}
        self._last = now  # this hook's own time counts in the next step's wall
        if self._lagged:
            if self._pending is not None:
                self._pending.update(state.step_times)
                self._keep(self._pending)
            self._pending = record
        else:
            record.update(state.step_times)
            self._keep(record)
        if self.session.trace is not None:
            self.session.trace.step()
        if now - self._flushed >= FLUSH_SECONDS:
            self._flush()
        if now - self._checked >= self.check_every_s:
            self._check(state)

    def on_epoch_end(self, state: LoopState) -> None:
        self._close_epoch()
        if time.perf_counter() - self._checked >= self.check_every_s:
            self._check(state)

    def on_fit_end(self, state: LoopState) -> None:
        self._end_loop(state)
        self._check(state)

    def on_exception(self, state: LoopState, error: BaseException) -> None:
        self._end_loop(state)

    def _end_loop(self, state: LoopState) -> None:
        self._close_epoch()
        if self.session.trace is not None:
            self.session.trace.stop()
        self.session.event("fit_end", state.global_step)

    def _keep(self, record: dict) -> None:
        self._buffer.append(record)
        self.session.steps.append(record)

    def _close_epoch(self) -> None:
        if self._pending is not None:  # CUDA: the clock dropped the last step's phases at the epoch's end
            self._keep(self._pending)
            self._pending = None
        self._flush()

    def _flush(self) -> None:
        self.session.write_steps(self._buffer)
        self._buffer = []
        self._flushed = time.perf_counter()

    def _check(self, state: LoopState) -> None:
        self.session.check(state)
        self._checked = time.perf_counter()

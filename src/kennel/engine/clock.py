"""Where a training step's time goes: the loop marks the end of each phase, a :class:`StepClock` turns the marks
into seconds per phase. Always on, so it has to cost nothing: a ``perf_counter`` per mark on the CPU; on CUDA a
recorded event per mark, read one step late so the loop never waits for the GPU."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PHASES is read by the profiler's pages, which need no PyTorch
    import torch

# The phases of a step, in order; each ends at one ``mark``.
PHASES = ("data", "transfer", "forward", "backward", "optimizer")


class StepClock:
    """``start()`` when the loop asks the loader for a batch, ``mark()`` at the end of each phase in
    :data:`PHASES`, ``finish()`` for ``{phase: seconds}``. On CUDA, ``finish`` returns the previous step's
    phases (empty on the first step of an epoch) since this step's GPU work may still be running."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            import torch

            self._event = torch.cuda.Event
        self._marks: list = []
        self._pending: list | None = None

    def _now(self):
        if self.cuda:
            event = self._event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._marks = [self._now()]

    def mark(self) -> None:
        self._marks.append(self._now())

    def finish(self) -> dict[str, float]:
        marks, self._marks = self._marks, []
        if self.cuda:
            marks, self._pending = self._pending, marks
            if marks is None:
                return {}
            seconds = [start.elapsed_time(end) / 1000 for start, end in itertools.pairwise(marks)]
        else:
            seconds = [end - start for start, end in itertools.pairwise(marks)]
        return dict(zip(PHASES, seconds, strict=False))

    def reset(self) -> None:
        """Forget a pending CUDA step (at an epoch's end, before evaluation reuses the GPU)."""
        self._marks, self._pending = [], None

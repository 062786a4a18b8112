"""The profiler's step timeline from inside the script: one JSON line per training step, in the shape kennel's
own loop writes (``kennel.profiler.observer``), appended to the job's ``profiler/steps.jsonl`` (rank k:
``steps-rank{k}.jsonl``) for the job's profiler to read as the script runs.

A step's phases are read at the hook's points in the script: ``data`` from the end of the previous step (or the
``set_mode`` call that began the phase) to the registered module's forward, ``forward`` to the loss (or the
module's output, with no registered loss), ``backward`` to the end of the backward pass, ``optimizer`` to the end
of the optimizer's step. Moving the batch to the device happens in the script, before the forward: it counts as
``data`` (``transfer`` is 0). The times are the host's: on a GPU, a phase ends when the host has queued its work,
and the wait for the GPU shows in the phase that first reads a result (the hook reads the loss after the
backward pass)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from kennel.jsonl import append_jsonl
from kennel.profiler.observer import FLUSH_SECONDS
from kennel.profiler.profile import rank_steps_file

log = logging.getLogger(__name__)


def steps_file(rank0: Path, rank: int) -> Path:
    """Where rank ``rank`` writes its step records, given rank 0's file."""
    return rank0 if rank == 0 else rank0.parent / rank_steps_file(rank)


class StepRecords:
    """Buffers step records and appends them to ``path`` at least every :data:`FLUSH_SECONDS` (checked as steps
    end, so no thread of its own) and at :meth:`flush`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._buffer: list[dict[str, Any]] = []
        self._flushed = time.perf_counter()
        self._failed = False

    def add(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        if time.perf_counter() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        records, self._buffer = self._buffer, []
        self._flushed = time.perf_counter()
        try:
            append_jsonl(self.path, records)
        except OSError as exc:  # a full disk must not end the user's training
            if not self._failed:
                log.warning("kennel: cannot write step records to %s: %s", self.path, exc)
            self._failed = True


def step_record(
    step: int, epoch: int, reference: float, start: float, forward: float, backward: float, end: float
) -> dict[str, Any]:
    """The record of one training step from its marks (``time.perf_counter`` seconds): ``reference`` when the
    previous step ended, ``start`` the forward's start, then the ends of the forward, the backward pass and the
    step. ``step`` is the number of training steps done, this one included (as kennel's loop counts)."""
    return {
        "step": step,
        "epoch": epoch,
        "t": time.time() - (time.perf_counter() - end),  # when it ended (a step may be written at the next)
        "wall": end - reference,
        "data": start - reference,
        "transfer": 0.0,
        "forward": forward - start,
        "backward": backward - forward,
        "optimizer": end - backward,
    }

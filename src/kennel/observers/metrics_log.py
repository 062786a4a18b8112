"""Metrics to the job's ``metrics.jsonl`` and to stdout as lines a regex can read (SageMaker metric definitions)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from kennel.engine import LoopState, Observer
from kennel.jobs import JobDir
from kennel.lines import fold, width


def metric_line(prefix: str, values: dict[str, Any], columns: int | None = None) -> str:
    """``[epoch 3] train_loss=0.4123 valid_accuracy=0.9130;`` - each value matchable with ``name=([0-9.eE+-]+)``.
    With ``columns``, folded between its fields to lines that fit (:func:`kennel.lines.fold`), each field whole."""
    fields = [f"[{prefix}]", *(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())]
    fields[-1] += ";"
    return " ".join(fields) if columns is None else fold(fields, columns)


class MetricsLogger(Observer):
    """Appends step and epoch metrics to the job's ``metrics.jsonl`` and echoes them to a stream."""

    def __init__(self, job: JobDir, every: int = 10, stream: TextIO | None = sys.stdout, echo_steps: bool = False):
        self.job = job
        self.every = every
        self.stream = stream
        self.echo_steps = echo_steps

    def _append(self, record: dict[str, Any]) -> None:
        self.job.append_metrics(record)

    def _echo(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)

    def on_fit_start(self, state: LoopState) -> None:
        """A resumed job starts again after its last checkpoint: lines written after it (by the run that was
        killed) are dropped, or the epoch it repeats would be logged twice."""
        records, cut_short = self.job.read_metrics_counted()  # cut short: the kill landed mid-line
        kept = [r for r in records if r.get("global_step", 0) <= state.global_step]
        if len(kept) < len(records) or cut_short:
            self.job.rewrite_metrics(kept)

    def on_batch_end(self, state: LoopState) -> None:
        if state.global_step % self.every and state.step != state.steps_per_epoch:
            return
        record = {"kind": "step", "epoch": state.epoch + 1, "global_step": state.global_step, **state.step_metrics}
        self._append(record)
        if self.echo_steps:
            self._echo(metric_line(f"step {state.global_step}", state.step_metrics, width(self.stream)))

    def on_epoch_end(self, state: LoopState) -> None:
        self._append({"kind": "epoch", "global_step": state.global_step, **state.epoch_metrics})
        shown = {k: v for k, v in state.epoch_metrics.items() if k != "epoch"}
        self._echo(metric_line(f"epoch {state.epoch + 1}/{state.epochs}", shown, width(self.stream)))

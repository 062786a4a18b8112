"""What watches a user's script from outside: the runner (:mod:`kennel.script.job`) emits a few events while the
script runs and every observer does one job with them: the metric log, the MLflow run, the system profiler and
its rules, a tuning trial's pruner. As with kennel's own loop, an observer never stops the script itself: it
asks the run to (:meth:`ScriptRun.request_stop`), and the runner ends the process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kennel.jobs import JobDir, JobRecord
from kennel.script.config import ScriptConfig
from kennel.script.metrics import MetricPoint

if TYPE_CHECKING:
    from kennel.observers.tracking import MLflowTracker
    from kennel.profiler.session import ProfilerSession

log = logging.getLogger(__name__)


@dataclass
class ScriptRun:
    """The small state observers read. Only ``request_stop`` writes, and the first request wins."""

    record: JobRecord
    config: ScriptConfig
    pid: int | None = None
    started: float = field(default_factory=time.time)
    stop_reason: str | None = None
    stop_status: str = "stopped"
    exit_code: int | None = None
    last: dict[str, float] = field(default_factory=dict)  # each metric's latest value

    def request_stop(self, reason: str, status: str = "stopped") -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_status = reason, status

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None


class ScriptObserver:
    """Base class: override what you need. ``on_tick`` comes about twice a second while the script runs."""

    def on_start(self, run: ScriptRun) -> None: ...

    def on_line(self, run: ScriptRun, line: str, stream: str) -> None:
        """Each line of the script's output (``stream``: "stdout" or "stderr"), as it comes."""

    def on_metric(self, run: ScriptRun, point: MetricPoint) -> None: ...

    def on_tick(self, run: ScriptRun) -> None: ...

    def on_end(self, run: ScriptRun) -> None:
        """The script has ended and the record holds its outcome (not yet saved as final)."""

    def on_job_end(self, record: JobRecord) -> None:
        """After the record's last write: close what the observer holds open, write what it reports."""


class MetricsLog(ScriptObserver):
    """Each point in the job's ``metrics.jsonl``, as it is read: the console, the report and a resumed run read
    them back."""

    def __init__(self, folder: JobDir) -> None:
        self.folder = folder

    def on_metric(self, run: ScriptRun, point: MetricPoint) -> None:
        self.folder.append_metrics(point.to_dict())


class Tracking(ScriptObserver):
    """The job's MLflow run: opened when the script starts, each point at its step, closed with the job."""

    def __init__(self, tracker: MLflowTracker) -> None:
        self.tracker = tracker

    def on_start(self, run: ScriptRun) -> None:
        self.tracker.start()

    def on_metric(self, run: ScriptRun, point: MetricPoint) -> None:
        self.tracker.log_points({point.name: point.value}, point.step)

    def on_job_end(self, record: JobRecord) -> None:
        self.tracker.finish(record)


class Profiling(ScriptObserver):
    """The system profiler over the script's process tree (sampling began with the session), the hook's step
    records, the profiler's rules every ``check_every_s`` and ``profile.html`` at the end."""

    def __init__(self, session: ProfilerSession) -> None:
        self.session = session
        self.session.follow_steps()
        self._checked = time.monotonic()
        self._saw_steps = False

    def on_start(self, run: ScriptRun) -> None:
        self.session.context.update({"script": run.config.entry_point, "processes": run.config.processes})

    def on_tick(self, run: ScriptRun) -> None:
        steps = self.session.step_records()
        if steps and not self._saw_steps:  # the loop began: what came before it was the script's initialization
            first = steps[0]  # its time is when it ended: it began a wall time earlier
            began = float(first.get("t", time.time())) - float(first.get("wall", 0.0))
            self.session.event("fit_start", first.get("step"), t=began)
            self._saw_steps = True
        if time.monotonic() - self._checked >= self.session.config.check_every_s:
            self.session.check(run)
            self._checked = time.monotonic()

    def on_end(self, run: ScriptRun) -> None:
        steps = self.session.step_records()
        if steps:
            if not self._saw_steps:
                self.on_tick(run)
            self.session.event("fit_end", steps[-1].get("step"))

    def on_job_end(self, record: JobRecord) -> None:
        self.session.finish()


def summary(run: ScriptRun) -> dict[str, Any]:
    """The record's metrics of a finished run: each metric's last value, and the script's exit status."""
    metrics: dict[str, Any] = dict(run.last)
    if run.exit_code is not None:
        metrics["exit_code"] = run.exit_code
    return metrics

"""A job's profile: what the profiler recorded, read from the job folder or from the live observer, as arrays.

Files under ``<job>/profiler/`` (JSON lines are appended while the job runs; a killed job's records stay readable):

    context.json     the machine and the job's set-up (device, cores, GPUs, loader workers, batch size)
    timeline.jsonl   job_start, fit_start, fit_end, job_end (unix times); a resumed job adds more
    steps.jsonl      one line per training step: wall seconds, and seconds per phase of the loop's clock
    steps-rank1.jsonl, ...   the same for each other rank of a job trained by several processes (torchrun)
    system.jsonl     one line per system sample (kennel.profiler.system)
    findings.jsonl   the rules' findings as they change (kennel.findings)
    trace.json, operators.json   the torch.profiler window, when one was asked for
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kennel.engine.clock import PHASES
from kennel.findings import Finding, load_findings
from kennel.jobs.folder import JobDir
from kennel.jsonl import read_jsonl

FOLDER = JobDir.PROFILER
CONTEXT, TIMELINE, STEPS, SYSTEM, FINDINGS = (
    "context.json",
    "timeline.jsonl",
    "steps.jsonl",
    "system.jsonl",
    "findings.jsonl",
)
TRACE, OPERATORS = "trace.json", "operators.json"
# The part of a step before DistributedDataParallel exchanges gradients: where the ranks' own work differs.
BEFORE_EXCHANGE = ("data", "transfer", "forward")


def rank_steps_file(rank: int) -> str:
    """Rank 0's steps are ``steps.jsonl``; another rank's carry its number."""
    return STEPS if rank == 0 else f"steps-rank{rank}.jsonl"


def read_rank_steps(folder: Path, world_size: int, last: int | None = None) -> dict[int, list[dict[str, Any]]]:
    """The step records of ranks 1 .. world_size-1 (whatever each has written so far)."""
    ranks = {}
    for rank in range(1, world_size):
        records, _ = read_jsonl(folder / rank_steps_file(rank))
        ranks[rank] = records[-last:] if last else records
    return ranks


# The job's phases, named after the timeline event that begins each.
JOB_PHASES = {"job_start": "initialization", "fit_start": "training", "fit_end": "finalization", "job_end": None}
STATS = ("max", "p99", "p95", "p50", "min")


def stats(values: np.ndarray) -> dict[str, float]:
    """max, p99, p95, p50 and min of ``values`` (NaN where there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return dict.fromkeys(STATS, float("nan"))
    p99, p95, p50 = np.percentile(values, [99, 95, 50])
    return {
        "max": float(values.max()),
        "p99": float(p99),
        "p95": float(p95),
        "p50": float(p50),
        "min": float(values.min()),
    }


def _matrix(rows: list[list[float]]) -> np.ndarray:
    """Rows of unequal length as a ``[rows, widest]`` float array, padded with NaN."""
    width = max((len(r) for r in rows), default=0)
    padded = [list(r) + [np.nan] * (width - len(r)) for r in rows]
    return np.array(padded, dtype=np.float64).reshape(len(rows), width)


@dataclass
class Profile:
    context: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # file -> why part of it could not be read
    other_ranks: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # rank -> its step records
    _series: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, job_dir: Path | str) -> Profile:
        folder = Path(job_dir) / FOLDER
        profile = cls()
        try:
            profile.context = json.loads((folder / CONTEXT).read_text())
        except FileNotFoundError:
            pass
        except (OSError, json.JSONDecodeError) as exc:
            profile.problems[CONTEXT] = f"{type(exc).__name__}: {exc}"
        for name, attribute in ((TIMELINE, "events"), (STEPS, "steps"), (SYSTEM, "samples")):
            records, skipped = read_jsonl(folder / name)
            setattr(profile, attribute, records)
            if skipped:
                profile.problems[name] = f"{skipped} unreadable line(s) skipped"
        profile.findings = load_findings(folder / FINDINGS)
        profile.other_ranks = read_rank_steps(folder, profile.world_size)
        return profile

    @property
    def empty(self) -> bool:
        return not (self.events or self.steps or self.samples)

    # --- the set-up -------------------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        return str(self.context.get("device", "cpu"))

    @property
    def cores(self) -> int:
        return int(self.context.get("cores") or 1)

    @property
    def gpu_count(self) -> int:
        """GPUs the job uses and the sampler can read (0 on a CPU job)."""
        return len(self.context.get("gpus") or []) if self.device == "cuda" else 0

    @property
    def world_size(self) -> int:
        """Processes that trained the job (torchrun); 1 for an ordinary job."""
        return int(self.context.get("world_size") or 1)

    def rank_work(self, window: int) -> dict[int, float]:
        """Each rank's mean seconds per step before the gradient exchange (data, transfer, forward) over its
        last ``window`` timed steps. Ranks wait for each other in the exchange, so their wall times agree and
        only this part shows which rank holds the others up."""
        means = {}
        for rank, steps in {0: self.steps, **self.other_ranks}.items():
            work = [sum(s[p] for p in BEFORE_EXCHANGE) for s in steps if all(p in s for p in BEFORE_EXCHANGE)]
            if work:
                means[rank] = float(np.mean(work[-window:]))
        return means

    @property
    def last_step(self) -> int | None:
        return int(self.steps[-1]["step"]) if self.steps else None

    @property
    def step(self) -> int | None:
        """The step a rule's finding is at: the last one recorded."""
        return self.last_step

    @property
    def mode(self) -> str:
        """The mode a rule's finding is about: the profiler times the training loop."""
        return "TRAIN"

    # --- steps ------------------------------------------------------------------------------------------------

    @cached_property
    def step_table(self) -> dict[str, np.ndarray]:
        """Per step: ``step``, ``epoch``, ``t`` (end, unix), ``wall`` (since the previous step ended), one column
        per phase of :data:`~kennel.engine.clock.PHASES`, ``busy`` (their sum: the loop's own step time) and
        ``other`` (wall minus busy: observers and bookkeeping). Steps timed without phases (the last of an epoch
        on CUDA) have NaN phases."""
        columns = ("step", "epoch", "t", "wall", *PHASES)
        table = {c: np.array([s.get(c, np.nan) for s in self.steps], dtype=np.float64) for c in columns}
        table["busy"] = sum(table[p] for p in PHASES) if self.steps else np.array([])
        table["other"] = np.clip(table["wall"] - table["busy"], 0, None)
        return table

    def data_share(self, window: int) -> tuple[float, int]:
        """The share of the loop's step time spent waiting for data over the last ``window`` timed steps, and
        how many steps that is."""
        table = self.step_table
        timed = np.flatnonzero(np.isfinite(table["busy"]))[-window:]
        busy = float(table["busy"][timed].sum())
        return (float(table["data"][timed].sum()) / busy if busy > 0 else 0.0), len(timed)

    def loop_breakdown(self) -> dict[str, float]:
        """Seconds of the training loop by phase: the clock's phases summed over the steps, ``other`` (observers
        and bookkeeping during steps, and steps timed without phases), and ``between steps`` (validation and
        the epochs' ends: the loop's time outside its steps)."""
        table = self.step_table
        timed = np.isfinite(table["busy"])
        parts = {name: float(table[name][timed].sum()) for name in PHASES}
        parts["other"] = float(table["other"][timed].sum() + table["wall"][~timed].sum())
        parts["between steps"] = max(self.phase_seconds()["training"] - float(table["wall"].sum()), 0.0)
        return parts

    # --- system samples ---------------------------------------------------------------------------------------

    def series(self, name: str) -> np.ndarray:
        """A system metric per sample: ``cpu`` (mean of the cores), ``cpu_max`` (busiest core), or any scalar
        key of a sample (``iowait``, ``mem``, ``proc_cpu``, ``proc_rss_mb``, ``disk_read_mb_s``, ...)."""
        if name not in self._series:
            if name in ("cpu", "cpu_max"):
                cores = self.cores_table
                reduce = np.nanmean if name == "cpu" else np.nanmax
                self._series[name] = reduce(cores, axis=1) if cores.shape[1] else np.full(len(cores), np.nan)
            else:
                self._series[name] = np.array([s.get(name, np.nan) for s in self.samples], dtype=np.float64)
        return self._series[name]

    @cached_property
    def cores_table(self) -> np.ndarray:
        """``[samples, cores]`` of each core's busy percentage."""
        return _matrix([s.get("cpu") or [] for s in self.samples])

    def gpu_series(self, name: str) -> np.ndarray:
        """``[samples, gpus]`` of a GPU metric (``util``, ``mem``, ``mem_used_mb``, ``power_w``)."""
        key = f"gpu:{name}"
        if key not in self._series:
            self._series[key] = _matrix([[g.get(name, np.nan) for g in s.get("gpus") or []] for s in self.samples])
        return self._series[key]

    @cached_property
    def sample_times(self) -> np.ndarray:
        return np.array([s.get("t", np.nan) for s in self.samples], dtype=np.float64)

    def training_samples(self) -> np.ndarray:
        """A mask of the samples taken while the loop trained (all of them when no loop ran yet)."""
        return self._training_mask

    @cached_property
    def _training_mask(self) -> np.ndarray:
        spans = [(start, end) for phase, start, end in self.job_phases() if phase == "training"]
        if not spans:
            return np.ones(len(self.samples), dtype=bool)
        times = self.sample_times
        return np.any([(times >= start) & (times <= end) for start, end in spans], axis=0)

    # --- the job's phases -------------------------------------------------------------------------------------

    @cached_property
    def last_seen(self) -> float:
        """The latest time anything was recorded (the end of a job killed before it could say so)."""
        times = (
            [e["t"] for e in self.events[-1:]] + [s["t"] for s in self.steps[-1:]] + [s["t"] for s in self.samples[-1:]]
        )
        return max(times, default=float("nan"))

    def job_phases(self) -> list[tuple[str, float, float]]:
        """``(phase, start, end)`` spans of initialization, training and finalization, from the timeline. A span
        still open (a running or killed job) ends at the last record; so does one a kill cut short, before a
        resume started the job again (the time it lay dead is no phase)."""
        spans: list[tuple[str, float, float]] = []
        current, since = None, None
        for event in self.events:
            if current is not None:
                killed = event.get("event") == "job_start"
                spans.append((current, since, self._last_record_before(event["t"], since) if killed else event["t"]))
            current, since = JOB_PHASES.get(event.get("event")), event["t"]
        if current is not None and self.last_seen > since:
            spans.append((current, since, self.last_seen))
        return spans

    def _last_record_before(self, moment: float, floor: float) -> float:
        times = np.concatenate([self.step_table["t"], self.sample_times])
        earlier = times[times < moment]
        return max(float(earlier.max()) if len(earlier) else floor, floor)

    def phase_seconds(self) -> dict[str, float]:
        totals = dict.fromkeys(("initialization", "training", "finalization"), 0.0)
        for phase, start, end in self.job_phases():
            totals[phase] += end - start
        return totals

    @property
    def started(self) -> float | None:
        return self.events[0]["t"] if self.events else None

    @property
    def ended(self) -> float | None:
        ends = [e["t"] for e in self.events if e.get("event") == "job_end"]
        return ends[-1] if ends and self.events[-1].get("event") == "job_end" else None

    def initialization_seconds(self) -> float | None:
        """From the job's start to its training loop's start (the first one, for a resumed job)."""
        starts = [e["t"] for e in self.events if e.get("event") == "fit_start"]
        return starts[0] - self.events[0]["t"] if starts and self.events else None

    # --- findings ---------------------------------------------------------------------------------------------

    def rule_results(self) -> dict[str, Finding]:
        """Each rule's verdict: its first firing if it ever fired, else its latest finding."""
        results: dict[str, Finding] = {}
        for finding in self.findings:
            earlier = results.get(finding.rule)
            if earlier is None or not earlier.fired:
                results[finding.rule] = finding
        return results

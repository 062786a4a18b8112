"""A job's folder and its record. :class:`JobDir` names every file a job has and is the one reader and writer
of its record (``job.json``), its metrics (``metrics.jsonl``) and its test evaluation; the features that keep
their own files (the debugger, the profiler, the model artifact) get their folder from it.

Layout of a job folder::

    job.json          the record (:class:`JobRecord`)
    config.yaml       the resolved configuration (what ``--resume`` runs again)
    metrics.jsonl     one JSON line per logged step and per epoch ({"kind": "step"|"epoch", ...}); a user's
                      script's job (kennel run) one per metric point read from its log ({"kind": "script", ...})
    checkpoints/      last.pt, previous.pt, best.pt (kennel.observers.checkpoint)
    model/            the model artifact (kennel.artifact)
    evaluation/       test-split results (kennel.evaluation)
    report.html       the job's report (kennel report JOB)
    profiler/         system samples, step records, findings, the torch.profiler trace (kennel.profiler)
    profile.html      the profiler's report (kennel profile JOB)
    debug/            the debugger's records, findings, rule statuses and report (kennel.debugger.store)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_json, atomic_write_text
from kennel.jsonl import append_jsonl, read_jsonl

if TYPE_CHECKING:
    from kennel.evaluation import EvaluationResult

STATUSES = ("created", "running", "completed", "stopped", "pruned", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def local_minutes(stamp: str | None) -> str | None:
    """A timestamp as :func:`now` writes it, as a person reads it: local time to the minute (``2026-12-01
    15:19``); None for none, or for text that is not one. A naive time is taken as local already."""
    try:
        moment = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
    return None if moment is None else f"{moment.astimezone():%Y-%m-%d %H:%M}"


@dataclass
class JobRecord:
    id: str
    name: str
    status: str = "created"
    kind: str = "training"  # "script": the user's own script, run by kennel run (kennel.script)
    created: str = field(default_factory=now)
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    backbone: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # key hyperparameters, flat, for the console
    config: dict[str, Any] = field(default_factory=dict)  # the resolved configuration
    metrics: dict[str, float] = field(default_factory=dict)  # best/final valid, test_accuracy, test_top5, ...
    artifact: str | None = None  # path of the model artifact folder
    engine: dict[str, Any] = field(default_factory=dict)  # what ran the frozen forward passes: backend, photos/s
    stop_reason: str | None = None
    error: str | None = None
    traceback: str | None = None  # a user's script that failed: the last lines of its traceback (kennel run)
    study: str | None = None  # the tuning study this job is a trial of
    mlflow_run_id: str | None = None
    data_fingerprint: str | None = None  # the train, valid and test photos it trained on (dataset_fingerprint)
    pid: int | None = None  # the process running the job, while it runs
    job_dir: str = ""

    @property
    def path(self) -> Path:
        return Path(self.job_dir)

    @property
    def folder(self) -> JobDir:
        return JobDir(self.path)

    @property
    def model_dir(self) -> Path:
        """The model artifact's folder: where the job recorded it, else its folder's ``model/`` (not made yet)."""
        return Path(self.artifact) if self.artifact else self.folder.model

    def save(self) -> None:
        self.folder.write_record(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class JobDir:
    """The folder of one job. Paths are properties, so a name is written once; ``read_*`` never raise for a
    file that is missing or cut short by a kill, because a job that failed early still has a console line and
    a report."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # The names inside a job folder, each written here only.
    RECORD, CONFIG, METRICS = "job.json", "config.yaml", "metrics.jsonl"
    CHECKPOINTS, MODEL, EVALUATION = "checkpoints", "model", "evaluation"
    REPORT, PROFILER, PROFILE_PAGE, DEBUG = "report.html", "profiler", "profile.html", "debug"
    # What a job leaves for a person, in the order the console lists it: copied to MLflow with the run and to
    # SageMaker's output folder (the model goes on its own, as the artifact).
    OUTPUTS = (CONFIG, METRICS, EVALUATION, REPORT, PROFILE_PAGE, PROFILER, DEBUG)

    record_file = property(lambda self: self.path / self.RECORD)
    config_file = property(lambda self: self.path / self.CONFIG)
    metrics_file = property(lambda self: self.path / self.METRICS)
    checkpoints = property(lambda self: self.path / self.CHECKPOINTS)
    model = property(lambda self: self.path / self.MODEL)
    evaluation = property(lambda self: self.path / self.EVALUATION)
    report = property(lambda self: self.path / self.REPORT)
    profiler = property(lambda self: self.path / self.PROFILER)
    profile_page = property(lambda self: self.path / self.PROFILE_PAGE)
    debug = property(lambda self: self.path / self.DEBUG)

    def has_record(self) -> bool:
        return self.record_file.is_file()

    # --- the record -------------------------------------------------------------------------------------

    def read_record(self) -> JobRecord:
        """The record; raises OSError or ValueError (json) when it is missing or unreadable."""
        record = JobRecord.from_dict(json.loads(self.record_file.read_text()))
        record.job_dir = str(self.path)
        return record

    def read_record_data(self, strict: bool = False) -> dict[str, Any] | None:
        """``job.json`` as written, with no schema (a report of an older job still renders); None if unreadable,
        unless ``strict`` (then the error is raised, for a page that says why)."""
        try:
            data = json.loads(self.record_file.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"{self.record_file} holds no JSON object")
        except (OSError, ValueError):
            if strict:
                raise
            return None
        return data

    def write_record(self, record: JobRecord) -> None:
        """Atomically: a reader (or a kill) never sees half a record."""
        atomic_write_json(self.record_file, asdict(record))

    # --- configuration, metrics, evaluation ------------------------------------------------------------

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config_file, text)

    def append_metrics(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.metrics_file, [entry])

    def read_metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The metric lines (only those of ``kind``, "step" or "epoch", when given); a line cut short is skipped."""
        return [r for r in self.read_metrics_counted()[0] if kind is None or r.get("kind") == kind]

    def read_metrics_counted(self) -> tuple[list[dict[str, Any]], int]:
        """Every metric line and how many could not be read (a kill landed mid-line)."""
        return read_jsonl(self.metrics_file)

    def rewrite_metrics(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_file, "".join(json.dumps(e) + "\n" for e in entries))

    def write_evaluation(self, result: EvaluationResult) -> None:
        result.save(self.evaluation)

    def read_evaluation(self) -> EvaluationResult:
        from kennel.evaluation import EvaluationResult  # torch, numpy: only for the readers that need them

        return EvaluationResult.load(self.evaluation)

    def outputs(self) -> list[Path]:
        """The :attr:`OUTPUTS` this job has so far."""
        return [self.path / name for name in self.OUTPUTS if (self.path / name).exists()]

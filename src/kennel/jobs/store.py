"""Job records: a job is a folder under ``$KENNEL_HOME/jobs`` with ``job.json`` describing it.

The folder is the source of truth (fast to list, no server); MLflow mirrors it for the UI.

Layout of a job folder::

    job.json          the record (this module)
    config.yaml       the resolved configuration
    metrics.jsonl     one JSON line per logged step and per epoch ({"kind": "step"|"epoch", ...})
    checkpoints/      last.pt (atomic; what --resume continues from)
    model/            the model artifact (kennel.artifact)
    evaluation/       test-split results (kennel.evaluation)
    report.html       kennel report JOB
    profiler/         system samples, step records, findings, the torch.profiler trace (kennel.profiler)
    profile.html      kennel profile JOB
    debug/            the debugger's records, findings, rule statuses and report (kennel.debugger.store)
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kennel.atomic import atomic_write_json
from kennel.errors import KennelError
from kennel.home import jobs_dir

STATUSES = ("created", "running", "completed", "stopped", "pruned", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class JobRecord:
    id: str
    name: str
    status: str = "created"
    kind: str = "training"
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
    study: str | None = None  # the tuning study this job is a trial of
    mlflow_run_id: str | None = None
    pid: int | None = None  # the process running the job, while it runs
    job_dir: str = ""

    @property
    def path(self) -> Path:
        return Path(self.job_dir)

    def save(self) -> None:
        atomic_write_json(self.path / "job.json", asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_job_id(name: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "job").strip("-")[:40] or "job"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{stem}-{secrets.token_hex(2)}"


def create_job(name: str | None, root: Path | None = None, **fields: Any) -> JobRecord:
    job_id = new_job_id(name)
    folder = (root or jobs_dir()) / job_id
    folder.mkdir(parents=True, exist_ok=False)
    record = JobRecord(id=job_id, name=name or job_id, job_dir=str(folder), **fields)
    record.save()
    return record


class JobNotFound(KennelError, LookupError):
    """No job answers to a reference (id, prefix, name, latest); the message says where kennel looked."""


def load_job(ref: str | Path, root: Path | None = None) -> JobRecord:
    """A job by folder path, full id, unique id prefix, name (the newest of that name), or ``latest``."""
    path = Path(ref).expanduser()
    if (path / "job.json").is_file():
        return _read(path)
    jobs = list_jobs(root)
    if str(ref) == "latest" and jobs:
        return jobs[0]
    exact = [j for j in jobs if j.id == str(ref) or j.name == str(ref)]
    if exact:
        return exact[0]
    prefixed = [j for j in jobs if j.id.startswith(str(ref))]
    if len(prefixed) == 1:
        return prefixed[0]
    where = root or jobs_dir()
    if len(prefixed) > 1:
        raise JobNotFound(f"job {ref!r} is ambiguous: {', '.join(j.id for j in prefixed[:5])}")
    raise JobNotFound(f"no job {ref!r} under {where} (kennel jobs lists them)")


def _read(folder: Path) -> JobRecord:
    record = JobRecord.from_dict(json.loads((folder / "job.json").read_text()))
    record.job_dir = str(folder)
    return record


def list_jobs(root: Path | None = None, study: str | None = None) -> list[JobRecord]:
    """Every job under the jobs folder, newest first; unreadable records are skipped."""
    base = root or jobs_dir()
    if not base.is_dir():
        return []
    records = []
    for folder in base.iterdir():
        if (folder / "job.json").is_file():
            try:
                records.append(_read(folder))
            except (json.JSONDecodeError, TypeError):
                continue
    if study is not None:
        records = [r for r in records if r.study == study]
    return sorted(records, key=lambda r: (r.created, r.id), reverse=True)


# --- what ran the job's frozen forward passes ------------------------------------------------------


def _engine_label(entry: dict[str, Any]) -> str:
    """``onnxruntime int8``, as :attr:`kennel.inference.Backend.label` names it (read here without torch)."""
    if entry.get("label"):  # where the record names it
        return entry["label"]
    runtime, precision = entry.get("runtime"), entry.get("precision")
    return f"{entry.get('backend')} {precision}" if runtime in ("torch", None) else f"{runtime} {precision}"


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def _int8_check(check: dict[str, Any], used: bool) -> str:
    fp32, int8, loss = check.get("valid_top1_fp32"), check.get("valid_top1_int8"), check.get("loss_points")
    change = f" ({-loss:+.2f} points)" if isinstance(loss, (int, float)) else ""
    verdict = "used" if used else "not used"
    return f"valid top-1 of a probe head, fp32 {_percent(fp32)}, int8 {_percent(int8)}{change}: {verdict}"


def engine_lines(engine: dict[str, Any]) -> list[tuple[str, str]]:
    """``("extraction", "onnxruntime fp32, 184 photos/s (fastest measured here ...)")`` for each forward pass a
    job ran on the inference engine (``record.engine``), then its int8 check where it had one. Plain text: the
    jobs console and profile.html print the same lines."""
    lines = []
    for use, entry in engine.items():
        if not isinstance(entry, dict):
            continue
        label, why = _engine_label(entry), f" ({entry['reason']})" if entry.get("reason") else ""
        if entry.get("cached"):  # nothing ran: every split's features came from the cache
            line = f"cached {entry.get('precision')} features, none computed; engine {label}{why}"
        else:
            rate = entry.get("photos_per_s") or entry.get("forward_photos_per_s")
            line = label + (f", {rate:.0f} photos/s" if rate else "") + why
        lines.append((use, line))
        if isinstance(entry.get("int8_check"), dict):
            lines.append(("int8 check", _int8_check(entry["int8_check"], used=entry.get("precision") == "int8")))
    return lines

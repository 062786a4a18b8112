"""Creating, finding and listing jobs under ``$KENNEL_HOME/jobs``."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from kennel.errors import KennelError
from kennel.home import jobs_dir
from kennel.jobs.folder import JobDir, JobRecord


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
    folder = JobDir(Path(ref).expanduser())
    if folder.has_record():
        return folder.read_record()
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


def list_jobs(root: Path | None = None, study: str | None = None) -> list[JobRecord]:
    """Every job under the jobs folder, newest first; unreadable records are skipped."""
    base = root or jobs_dir()
    if not base.is_dir():
        return []
    records = []
    for path in base.iterdir():
        folder = JobDir(path)
        if folder.has_record():
            try:
                records.append(folder.read_record())
            except (OSError, ValueError, TypeError):
                continue
    if study is not None:
        records = [r for r in records if r.study == study]
    return sorted(records, key=lambda r: (r.created, r.id), reverse=True)

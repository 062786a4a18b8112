"""What a person names on the command line, found: a job (``kennel jobs show effnet``) or a model to predict with
or serve (a model folder, a job folder, a job's id or name, or a registered version: ``models:/dogs@prod``)."""

from __future__ import annotations

from pathlib import Path

from kennel.errors import Failure, UsageError
from kennel.jobs import JobDir, JobNotFound, JobRecord, list_jobs, load_job
from kennel.model_registry import is_registry_uri, resolve

JOB_HELP = "job id, id prefix, name, folder, 'latest', or a unique part of an id or name"


def find_job(ref: str) -> JobRecord:
    """A job as ``load_job`` finds it, else the one job whose id or name contains ``ref`` (e.g. 'effnet')."""
    try:
        return load_job(ref)
    except JobNotFound:
        matches = [r for r in list_jobs() if ref in r.id or ref in r.name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"job {ref!r} is ambiguous: {', '.join(r.id for r in matches[:5])}") from None
        raise
    except (OSError, ValueError) as error:  # a job folder whose record is unreadable or cut short
        raise Failure(f"cannot read job {ref!r}: {error}") from None


def resolve_model(ref: str) -> Path:
    """An artifact folder, a job folder holding ``model/``, a job reference (id, prefix, name, latest), or a
    registered version (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``), fetched from the registry."""
    from kennel.artifact import ArtifactError, is_artifact  # PyTorch: not at start-up

    if is_registry_uri(ref):
        return resolve(ref).folder
    path = Path(ref).expanduser()
    if is_artifact(path):
        return path
    if is_artifact(JobDir(path).model):
        return JobDir(path).model
    try:
        job = load_job(ref)
    except JobNotFound:
        if path.exists():
            raise ArtifactError(f"{path} is not a kennel model artifact: artifact.json is missing") from None
        raise ArtifactError(f"no model folder {path} and no job {ref!r} (kennel jobs lists them)") from None
    folder = job.model_dir
    if not is_artifact(folder):
        raise ArtifactError(f"job {job.id} ({job.status}) has no model artifact at {folder}")
    return folder

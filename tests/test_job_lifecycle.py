"""A job's end on every path: a write that fails (a full disk) or a tracking run that cannot be closed fails the
job with its cause, in its record and its exit code, and loses nothing already written."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_config

from kennel.job import train
from kennel.job.run import JobFailed
from kennel.jobs import list_jobs, load_job


def _config(dataset: Path, **overrides):
    """One epoch, tracked: these tests close the job's MLflow run."""
    return tiny_config(dataset, **{"epochs": 1, "tracking": True, **overrides})


def _file_size_limit(limit: int):
    """For a child process: every write past ``limit`` bytes of one file fails with EFBIG, as a disk that fills
    up fails with ENOSPC (SIGXFSZ, which would kill the process instead, is ignored)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_model_the_disk_cannot_hold_fails_the_job_in_one_line(dataset: Path, kennel_home: Path) -> None:
    """The tiny model's weights (~160 KB) do not fit under a 100 KB limit per file, the record and metrics do."""
    args = [
        sys.executable, "-m", "kennel", "train", "--data", str(dataset), "--model", "tiny", "--epochs", "1",
        "--set", "model.pretrained=false", "--set", "export_onnx=false", "--no-tracking", "--name", "full",
    ]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, env=os.environ.copy(), preexec_fn=_file_size_limit(100_000), timeout=300
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job ") and "File too large" in last and "model.safetensors" in last
    record = load_job("full")
    assert record.status == "failed" and "File too large" in record.error and record.ended is not None
    assert not (record.path / "model" / "model.safetensors").is_file()  # no half-written model either
    assert record.artifact is None


def test_a_tracking_run_that_cannot_be_closed_fails_the_job(dataset: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    def store_gone(self, run_id, status=None, **kwargs):
        raise ConnectionError("the tracking store went away")

    monkeypatch.setattr(MlflowClient, "set_terminated", store_gone)
    with pytest.raises(JobFailed, match=r"MLflow run of job .* the tracking store went away"):
        train(_config(dataset, name="untracked-end"), stream=None)
    record = load_job("untracked-end")
    assert record.status == "failed" and "the tracking store went away" in record.error
    assert record.artifact is not None and Path(record.artifact, "model.safetensors").is_file()  # nothing lost


def test_a_finished_job_closes_its_run_with_its_status(dataset: Path) -> None:
    from kennel.mlflow_store import get_client

    record = train(_config(dataset, name="closed"), stream=None)
    run = get_client().get_run(record.mlflow_run_id)
    assert record.status == "completed" and run.info.status == "FINISHED"
    assert json.loads((record.path / "job.json").read_text())["status"] == "completed"
    assert [j.id for j in list_jobs()] == [record.id]

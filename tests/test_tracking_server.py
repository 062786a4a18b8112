"""Jobs recorded in a shared MLflow tracking server (``--tracking-uri http://...``): a real ``mlflow server``
started once for the session, its artifacts in the server's own store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import kennel
from servers import TrackingServer

TINY = ["--model", "tiny", "--set", "model.pretrained=false", "--set", "export_onnx=false", "--epochs", "1"]


def test_train_records_its_run_and_files_in_a_tracking_server(
    dataset: Path, mlflow_server: TrackingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    # The flag wins over the environment (and the environment is restored after the test).
    monkeypatch.setenv("KENNEL_TRACKING_URI", f"sqlite:///{tmp_path / 'not-this.db'}")
    result = kennel(
        "train", "--data", dataset, *TINY, "--name", "remote", "--tracking-uri", mlflow_server.url, "--json"
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "not-this.db").exists()

    run = MlflowClient(mlflow_server.url).get_run(job["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "remote"
    assert run.data.params["model.backbone"] == "tiny" and run.data.params["epochs"] == "1"
    assert run.data.metrics["test_accuracy"] == pytest.approx(job["metrics"]["test_accuracy"])
    assert run.data.tags["kennel.job_id"] == job["id"]
    # The files went through the server into its artifact store, not beside some local SQLite file.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    (stored,) = (p for p in mlflow_server.artifacts.rglob(run.info.run_id) if p.is_dir())
    model = Path(job["artifact"])
    files = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())
    assert files and all((stored / "artifacts" / "model" / name).is_file() for name in files)
    assert (stored / "artifacts" / "config.yaml").is_file()


def test_ui_refuses_to_serve_a_tracking_server() -> None:
    result = kennel("ui", "--tracking-uri", "http://mlflow.lan:5000")
    assert result.exit_code == 2
    assert "http://mlflow.lan:5000 is a tracking server already" in result.output


def test_the_commands_that_record_jobs_name_the_tracking_uri_and_its_variables() -> None:
    for command in ("train", "tune", "demo", "ui"):
        shown = " ".join(kennel(command, "--help").output.split())
        assert "--tracking-uri" in shown and "KENNEL_TRACKING_URI" in shown, command

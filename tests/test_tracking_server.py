"""Jobs recorded in a shared MLflow tracking server (``--tracking-uri http://...``): a real ``mlflow server``
started once for the session, its artifacts in the server's own store; and ``kennel ui``'s server: the page it
opens on, and MLflow's telemetry off unless a person says otherwise."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kennel
from servers import TrackingServer

from kennel.browser import CHROMIUM_ARGS, find_chromium

TINY = ["--model", "tiny", "--set", "model.pretrained=false", "--set", "export_onnx=false", "--epochs", "1"]


@pytest.mark.slow
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


TELEMETRY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def test_importing_mlflow_through_kennel_starts_no_telemetry(tmp_path: Path) -> None:
    # A bare environment: no CI or pytest variables, which MLflow also takes as a reason to stay quiet.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KENNEL_HOME": str(tmp_path / "home")}
    code = (
        "import os, kennel.mlflow_store, mlflow; from mlflow.telemetry.client import get_telemetry_client; "
        "print(os.environ['MLFLOW_DISABLE_TELEMETRY'], get_telemetry_client())"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["true", "None"], done.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": None}),
        ({"MLFLOW_DISABLE_TELEMETRY": "false"}, {"MLFLOW_DISABLE_TELEMETRY": "false", "DO_NOT_TRACK": None}),
        ({"DO_NOT_TRACK": "false"}, {"MLFLOW_DISABLE_TELEMETRY": None, "DO_NOT_TRACK": "false"}),
    ],
    ids=["unset", "mlflow-variable-set", "do-not-track-set"],
)
def test_the_ui_server_has_telemetry_off_unless_the_person_set_it(monkeypatch, given, expected) -> None:
    from kennel.cli.ui import server_env

    for name in TELEMETRY:
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    env = server_env()
    assert {name: env.get(name) for name in TELEMETRY} == expected


def test_ui_opens_on_the_runs_of_kennels_experiment_or_the_one_asked_for(kennel_home: Path) -> None:
    from kennel.cli.ui import experiment_page
    from kennel.errors import UsageError
    from kennel.home import tracking_uri
    from kennel.mlflow_store import get_client, init_store

    uri = tracking_uri()
    page = experiment_page("kennel", uri)  # a new store: kennel's experiment is made for the page to show
    kennel_id = get_client(uri).get_experiment_by_name("kennel").experiment_id
    assert page == f"#/experiments/{kennel_id}?workflowType=machine_learning"
    study_id = init_store("study-1", uri)
    assert experiment_page("study-1", uri) == f"#/experiments/{study_id}?workflowType=machine_learning"
    with pytest.raises(UsageError, match=r"no experiment 'study-9' in .* \(it has: Default, kennel, study-1\)"):
        experiment_page("study-9", uri)
    result = kennel("ui", "--experiment", "study-9")
    assert result.exit_code == 2 and result.output.startswith("error: no experiment 'study-9'")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is absent")
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium here (make test installs Debian's where it can)")
def test_the_page_ui_prints_lists_the_runs(mlflow_server: TrackingServer) -> None:
    from playwright.sync_api import sync_playwright

    from kennel.cli.ui import experiment_page
    from kennel.mlflow_store import get_client, init_store

    store = f"sqlite:///{mlflow_server.artifacts.parent / 'mlflow.db'}"  # the store the server serves
    client = get_client(mlflow_server.url)
    run = client.create_run(init_store("kennel", mlflow_server.url), run_name="beagle-run")
    client.set_terminated(run.info.run_id)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(find_chromium()), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{mlflow_server.url}/{experiment_page('kennel', store)}")
            page.get_by_text("beagle-run").first.wait_for()  # the runs table, with the run in it
            text = page.inner_text("body")
        finally:
            browser.close()
    assert "Welcome to MLflow" not in text and "Information about UI telemetry" not in text

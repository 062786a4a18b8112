"""The model registry: tiny jobs registered as versions of a name in MLflow's registry (one SQLite store for the
module, a registered name per test), aliases moved and written in the deployment history, and versions fetched
back through MLflow as artifact folders that load, from SQLite and from a real tracking server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import kennel, tiny_config, use_home
from servers import TrackingServer

from kennel import model_registry
from kennel.errors import Failure, UsageError
from kennel.jobs import JobRecord, load_job

pytestmark = pytest.mark.slow  # two tiny jobs and a store for the module: seconds before the first test


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: opening a new one costs seconds, so each test registers its own name."""
    from kennel.mlflow_store import init_store

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry-store') / 'mlflow.db'}"
    init_store(uri=uri)
    return uri


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Iterator[list[JobRecord]]:
    """Two tiny jobs, trained with tracking off: registering gives each its run."""
    from kennel.job import train

    with pytest.MonkeyPatch.context() as env:
        use_home(env, tmp_path_factory.mktemp("registry-jobs"))
        records = [train(tiny_config(dataset, **{"data.workers": 0, "seed": seed}), stream=None) for seed in (0, 1)]
    assert [r.status for r in records] == ["completed", "completed"], [r.error for r in records]
    yield records


@pytest.fixture(autouse=True)
def in_store(kennel_home: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own home (history, cache) over the module's store."""
    monkeypatch.setenv("KENNEL_TRACKING_URI", store)


def registered(jobs: list[JobRecord], name: str) -> None:
    """``name`` version 1 (alias prod) from the first job, version 2 from the second."""
    model_registry.register(jobs[0].job_dir, name, alias="prod")
    model_registry.register(jobs[1].job_dir, name)


def test_registering_twice_makes_two_versions_carrying_the_jobs_numbers(jobs: list[JobRecord]) -> None:
    result = kennel("models", "register", jobs[0].job_dir, "--name", "dogs", "--alias", "prod")
    assert result.exit_code == 0, result.output
    assert "as dogs version 1, alias prod" in result.output and "kennel serve models:/dogs@prod" in result.output
    second = json.loads(kennel("models", "register", jobs[1].job_dir, "--name", "dogs", "--json").output)
    assert second["version"] == "2" and second["aliases"] == [] and second["job_id"] == jobs[1].id
    assert second["metrics"]["test_accuracy"] == pytest.approx(jobs[1].metrics["test_accuracy"])
    assert second["backbone"] == "tiny" and second["data_fingerprint"] == jobs[1].data_fingerprint  # as it trained

    first, again = model_registry.versions("dogs")[1], model_registry.register(jobs[0].job_dir, "dogs")
    assert first.aliases == ("prod",) and first.data_fingerprint == second["data_fingerprint"]  # the same photos
    # The job had no run (tracking off): registering gave it one, which the next registration reuses.
    assert load_job(jobs[0].job_dir).mlflow_run_id == first.run_id == again.run_id and again.version == "3"
    assert first.source.endswith(f"{first.run_id}/artifacts/model")


def test_versions_list_newest_first_as_a_table_and_as_json(jobs: list[JobRecord]) -> None:
    registered(jobs, "listed")
    rows = json.loads(kennel("models", "versions", "listed", "--format", "json").output)
    assert [(r["version"], r["aliases"], r["job_id"]) for r in rows] == [
        ("2", [], jobs[1].id),
        ("1", ["prod"], jobs[0].id),
    ]
    table = kennel("models", "versions", "listed", "--format", "table").output
    assert "prod" in table and jobs[0].id in table and f"{100 * jobs[0].metrics['test_accuracy']:.1f}%" in table
    header, *lines = kennel("models", "versions", "listed").output.splitlines()  # piped: TSV
    assert header.split("\t")[:3] == ["version", "aliases", "created"] and len(lines) == 2


def test_an_alias_moves_and_each_move_is_in_the_history(jobs: list[JobRecord]) -> None:
    registered(jobs, "moved")
    assert model_registry.alias_version("moved", "prod") == "1"
    result = kennel("models", "alias", "moved", "prod", "2")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "moved@prod: version 1 -> version 2"
    assert model_registry.alias_version("moved", "prod") == "2"
    model_registry.record_deployment("moved", "2", "prod", "serve", "http://127.0.0.1:8080")

    lines = json.loads(kennel("models", "history", "moved", "--json").output)
    assert [(e["event"], e["version"], e["alias"], e["detail"]) for e in lines] == [
        ("alias", "1", "prod", "new alias"),
        ("alias", "2", "prod", "was version 1"),
        ("serve", "2", "prod", "http://127.0.0.1:8080"),
    ]
    assert all(e["time"] and e["host"] for e in lines)
    assert "was version 1" in kennel("models", "history", "moved", "--format", "table").output
    assert "no deployments of quiet" in kennel("models", "history", "quiet", "--format", "table").output
    with pytest.raises(ValueError, match="unknown deployment event"):
        model_registry.record_deployment("moved", "2", None, "promote")


def test_both_uri_forms_fetch_a_folder_that_loads_and_the_copy_is_reused(
    jobs: list[JobRecord], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts

    from kennel.artifact import load_artifact
    from kennel.cli.lookup import resolve_model

    registered(jobs, "fetched")
    by_alias = model_registry.resolve("models:/fetched@prod")
    assert (by_alias.name, by_alias.version, by_alias.alias, by_alias.job_id) == ("fetched", "1", "prod", jobs[0].id)
    by_version = resolve_model("models:/fetched/2")
    assert by_version != by_alias.folder
    for folder in (by_alias.folder, by_version):
        assert load_artifact(folder).class_names == ["Synthetic a", "Synthetic b", "Synthetic c"]
    assert resolve_model(str(by_version)) == by_version

    def no_download(**kwargs: object) -> None:
        raise AssertionError("fetched again")

    with monkeypatch.context() as patched:
        patched.setattr(mlflow.artifacts, "download_artifacts", no_download)
        assert model_registry.resolve("models:/fetched@prod").folder == by_alias.folder  # whole: reused
        (by_alias.folder / model_registry.MARKER).write_text("{}")  # not the version the registry names
        with pytest.raises(Failure, match="fetched again"):
            model_registry.resolve("models:/fetched@prod")
    assert load_artifact(model_registry.resolve("models:/fetched/1").folder).info.backbone == "tiny"


def test_unknown_names_aliases_versions_and_jobs_are_one_line_errors(jobs: list[JobRecord]) -> None:
    registered(jobs, "known")
    failures = {
        ("models", "versions", "nobody"): "no registered model 'nobody'",
        ("models", "alias", "known", "prod", "9"): "model 'known' has no version '9' (versions: 2, 1)",
        ("models", "alias", "known", "v3", "1"): "Version alias name 'v3' is reserved",
        ("models", "register", "no-such-job", "--name", "known"): "no job 'no-such-job'",
        ("models", "register", jobs[0].job_dir, "--name", "known", "--alias", "latest"): "registered known version 3, "
        "but cannot set alias 'latest' of 'known': 'latest' alias name (case insensitive) is reserved",
    }
    for args, message in failures.items():
        result = kennel(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    for uri, message in {
        "models:/known@staging": "has no alias 'staging' (aliases: prod -> 1)",
        "models:/known/7": "has no version '7'",
        "models:/nobody@prod": "no registered model 'nobody'",
        "models:/known": "give models:/NAME@ALIAS or models:/NAME/VERSION",
        "models:/known/latest": "give models:/NAME@ALIAS or models:/NAME/VERSION",
    }.items():
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model_registry.resolve(uri)


def test_the_default_listing_still_lists_backbones() -> None:
    assert kennel("models", "*lite*").output == kennel("models", "ls", "*lite*").output
    assert "tf_efficientnet_lite0" in kennel("models", "*lite*").output
    shown = kennel("models", "--help").output
    assert all(command in shown for command in ("register", "versions", "alias", "history"))


@pytest.mark.slow
def test_a_version_registered_in_a_tracking_server_is_served_from_its_artifact_store(
    jobs: list[JobRecord], mlflow_server: TrackingServer
) -> None:
    from kennel.artifact import load_artifact

    version = model_registry.register(jobs[1].job_dir, "remote", alias="prod", tracking_uri=mlflow_server.url)
    assert version.source.startswith("mlflow-artifacts:")  # the files went through the server
    fetched = model_registry.resolve("models:/remote@prod", tracking_uri=mlflow_server.url)
    assert fetched.version == "1" and load_artifact(fetched.folder).info.backbone == "tiny"
    assert model_registry.alias_version("remote", "prod", tracking_uri=mlflow_server.url) == "1"
    with pytest.raises(UsageError, match="no registered model 'remote'"):
        model_registry.resolve("models:/remote@prod")  # the module's SQLite store has no such name


def test_an_endpoint_following_an_alias_switches_versions_with_no_request_failing(
    jobs: list[JobRecord], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from fastapi.testclient import TestClient
    from helpers import LOOPBACK, asking_meanwhile, encode, wait_until
    from PIL import Image

    from kennel.serve.app import ServeSettings, create_app

    caplog.set_level(logging.INFO, logger="kennel.serve")
    registered(jobs, "followed")
    uri = "models:/followed@prod"
    settings = ServeSettings(model_ref=uri, follow_alias=True, follow_interval_s=0.2, max_wait_ms=2)
    photo = encode(Image.new("RGB", (40, 40), (90, 160, 30)))
    with TestClient(create_app(uri, settings), base_url=LOOPBACK) as client:
        served = lambda: client.get("/model").json()  # noqa: E731
        assert (served()["name"], served()["version"], served()["alias"]) == ("followed", "1", "prod")
        ask = lambda: client.post("/invocations", content=photo, headers={"content-type": "image/jpeg"})  # noqa: E731
        with asking_meanwhile(ask) as answers:
            wait_until(lambda: len(answers) >= 6, "requests on version 1")
            model_registry.set_alias("followed", "prod", "2")
            wait_until(lambda: served()["version"] == "2", "the endpoint on version 2")
            after = len(answers)
            wait_until(lambda: len(answers) >= after + 6, "requests on version 2")
    assert [a.status_code for a in answers] == [200] * len(answers)
    events = [(line["event"], line["version"]) for line in model_registry.history("followed")]
    assert events.index(("serve", "1")) < events.index(("alias", "2")) < events.index(("switch", "2"))
    logged = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("switched to followed version 2 ") for line in logged), logged

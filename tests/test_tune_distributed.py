"""Tuning on several machines: studies in a real PostgreSQL server (started by the test session), the claim
that holds across machines, ``kennel tune --worker`` joining a study, and the trials of every worker recorded in
one MLflow tracking server. Two kennel homes stand for two machines: separate study folders, file locks, caches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from helpers import kennel, space_file, wait_until
from servers import TrackingServer

from kennel.localhost import free_port
from kennel.tune.claim import AdvisoryLock
from kennel.tune.results import outcome

TINY = ["--set", "model.backbone=tiny", "--set", "model.pretrained=false"]
SPACE = {"parameters": {"optim.lr": {"type": "float", "low": 0.001, "high": 0.5, "log": True}}}


def test_the_advisory_claim_admits_one_holder_across_connections(postgres_url: str) -> None:
    first, second = AdvisoryLock(postgres_url, "kennel.claim:a"), AdvisoryLock(postgres_url, "kennel.claim:a")
    entered = threading.Event()

    def take_second() -> None:
        with second:
            entered.set()

    with first:
        with AdvisoryLock(postgres_url, "kennel.claim:b"):
            pass  # another study's claim is free
        waiter = threading.Thread(target=take_second)
        waiter.start()
        # The server itself says when the second one is blocked on the lock; it must not have got in by then.
        wait_until(lambda: entered.is_set() or _waiting_claims(postgres_url) == 1, "the second claim")
        assert not entered.is_set()  # the second holder waits ...
    assert entered.wait(10)  # ... until the first lets go
    waiter.join()


def test_a_worker_says_what_is_missing(postgres_url: str, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = kennel("tune", "--worker", "--storage", postgres_url)
    assert (
        result.exit_code == 2 and "--worker joins an existing study: pass --study NAME and --storage" in result.output
    )
    result = kennel("tune", "--worker", "--storage", postgres_url, "--study", "s", "--trials", "3")
    assert result.exit_code == 2 and "leave out --trials" in result.output
    result = kennel("tune", "--worker", "--storage", postgres_url, "--study", "s", "--seed", "0")
    assert result.exit_code == 2 and "leave out --seed" in result.output  # 0 is a value, not "not given"
    result = kennel("tune", "--worker", "--storage", postgres_url, "--study", "absent")
    assert result.exit_code == 2 and "no study 'absent' in postgresql://postgres@127.0.0.1" in result.output

    closed = f"postgresql://kennel:secret@127.0.0.1:{free_port()}/kennel"
    result = kennel("tune", "--worker", "--storage", closed, "--study", "s")
    assert result.exit_code == 1 and "secret" not in result.output  # a fine request; the server is not
    assert f"cannot open the study database postgresql://kennel:***@127.0.0.1:{closed.split(':')[-1]}" in result.output
    assert "Expected a running postgresql server with this database" in result.output

    # postgres:// (libpq's and many dashboards' spelling) is accepted; an unknown kind of database is named.
    result = kennel(
        "tune", "--worker", "--storage", postgres_url.replace("postgresql://", "postgres://"), "--study", "absent"
    )
    assert result.exit_code == 2 and "no study 'absent' in postgresql://postgres@127.0.0.1" in result.output
    result = kennel("tune", "--worker", "--storage", "postgrse://db.lan/kennel", "--study", "s")
    assert result.exit_code == 2 and "SQLAlchemy knows no database 'postgrse'" in result.output

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the driver were not installed
    result = kennel("tune", "--data", dataset, "--storage", postgres_url, "--study", "nodriver", "-n", "1", *TINY)
    assert result.exit_code == 2, result.output
    assert "its postgresql driver psycopg is not installed (pip install 'psycopg[binary]'" in result.output


def test_a_missing_dataset_stops_before_the_study_exists(kennel_home: Path) -> None:
    result = kennel("tune", "--data", "/nonexistent", "--study", "nodata", *TINY)
    assert result.exit_code == 2 and "dataset folder /nonexistent does not exist" in result.output
    assert not (kennel_home / "studies" / "nodata").exists()


def _waiting_claims(url: str) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return connection.execute(sqlalchemy.text(query)).scalar_one()


def _wait_for(predicate, processes: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"kennel tune ended early: {process.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the tuning workers"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_machines_share_one_postgres_study_and_one_tracking_server(
    postgres_url: str, mlflow_server: TrackingServer, dataset: Path, tmp_path: Path
) -> None:
    """One machine creates the study and tunes; another joins with --worker, its photos elsewhere. The test
    holds the study's claim until both wait on it, so both are sure to run trials, then lets them race."""
    from mlflow.tracking import MlflowClient

    space = space_file(tmp_path / "space.yaml", SPACE)
    elsewhere = shutil.copytree(dataset, tmp_path / "photos-on-b")
    common = ["--storage", postgres_url, "--study", "dist", "--tracking-uri", mlflow_server.url]

    def machine(name: str, *args: str) -> subprocess.Popen:
        home = tmp_path / name
        env = {**os.environ, "KENNEL_HOME": str(home), "KENNEL_CACHE": str(home / "cache"), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "kennel", "tune", *common, *args]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    claim = AdvisoryLock(postgres_url, "kennel.claim:dist")
    with claim:
        a = machine("a", "--data", str(dataset), "--space", str(space), "--trials", "6", "--pruner", "none", *TINY)
        _wait_for(lambda: _waiting_claims(postgres_url) == 1, [a])
        b = machine("b", "--worker", "--data", str(elsewhere))
        _wait_for(lambda: _waiting_claims(postgres_url) == 2, [a, b])
    outputs = [process.communicate(timeout=300)[0] for process in (a, b)]
    assert [a.returncode, b.returncode] == [0, 0], outputs
    assert "joining study dist in postgresql://postgres@127.0.0.1" in outputs[1]

    trials = optuna.load_study(study_name="dist", storage=postgres_url).get_trials(deepcopy=False)
    assert len(trials) == 6 and [outcome(t) for t in trials] == ["complete"] * 6
    assert {t.user_attrs["kennel.pid"] for t in trials} == {a.pid, b.pid}  # both machines ran trials
    # Both machines number their worker 0 and joined at the same count: their samplers must still differ.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6

    jobs = {}
    for name in ("a", "b"):
        for folder in (tmp_path / name / "jobs").iterdir():
            jobs[folder.name] = yaml.safe_load((folder / "config.yaml").read_text())
        record = yaml.safe_load((tmp_path / name / "studies" / "dist" / "study.json").read_text())
        assert record["status"] == "completed" and record["stop_reason"] == "6 trials"
    assert len(jobs) == 6
    roots = {t.user_attrs["kennel.pid"]: jobs[t.user_attrs["kennel.job_id"]]["data"]["root"] for t in trials}
    assert roots == {a.pid: str(dataset), b.pid: str(elsewhere)}  # the worker trained on its own copy

    # Either machine's console lists the study with the database's counts, not its own last snapshot.
    stale = tmp_path / "a" / "studies" / "dist" / "study.json"
    stale.write_text(stale.read_text().replace('"complete": ', '"complete": 1000'))
    listed = subprocess.run(
        [sys.executable, "-m", "kennel", "jobs", "studies", "--json"],
        env={**os.environ, "KENNEL_HOME": str(tmp_path / "a")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(listed.stdout)[0]["counts"] == {"complete": 6}, listed.stderr

    client = MlflowClient(mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name("dist").experiment_id])
    assert sorted(r.data.tags["kennel.job_id"] for r in runs) == sorted(jobs)  # every worker's trials, one store
    assert {r.info.status for r in runs} == {"FINISHED"}

"""MLflowTracker: a tiny Trainer on random tensors, logged to a SQLite store in tmp and read back with MlflowClient."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kennel.engine import LoopConfig, Observer, Trainer
from kennel.jobs import JobRecord, create_job, load_job
from kennel.mlflow_store import artifact_location
from kennel.observers.tracking import MLflowTracker, flatten_params

CONFIG = {"model": {"backbone": "tiny", "freeze": "all"}, "optim": {"lr": 0.1, "name": "sgd"}, "epochs": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: creating its tables takes seconds, so the tests share it."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 6, generator=generator), torch.randint(0, 3, (24,), generator=generator))
    return DataLoader(data, batch_size=4), DataLoader(data, batch_size=12)


def fit(observers: list[Observer], epochs: int = 2, checkpoint: dict | None = None) -> tuple[Trainer, object]:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        LoopConfig(epochs=epochs, device=torch.device("cpu")),
        observers=observers,
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
    return trainer, trainer.fit(*loaders())


def new_job(name: str) -> JobRecord:
    record = create_job(name, backbone="tiny", params={"lr": 0.1}, config=CONFIG)
    (record.path / "config.yaml").write_text("epochs: 2\n")
    (record.path / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 1}\n')
    (record.path / "evaluation").mkdir()
    (record.path / "evaluation" / "summary.json").write_text("{}")
    (record.path / "model").mkdir()
    (record.path / "model" / "labels.json").write_text('["a", "b", "c"]')
    return record


def test_tracker_logs_params_metrics_artifacts_and_finishes(store: str) -> None:
    record = new_job("tracked")
    tracker = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store, log_every=2)
    _, state = fit([tracker])
    assert state.status == "completed" and tracker.enabled
    record.status, record.metrics = "completed", {"test_accuracy": 0.75, "test_top5": 1.0}
    tracker.finish(record)
    assert tracker.enabled

    client = tracker.client
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    assert run.data.params["optim.lr"] == "0.1" and run.data.params["model.backbone"] == "tiny"
    assert run.data.tags["kennel.job_id"] == record.id
    assert run.data.tags["kennel.backbone"] == "tiny"
    assert run.data.tags["kennel.status"] == "completed"
    assert run.data.metrics["test_accuracy"] == 0.75 and run.data.metrics["test_top5"] == 1.0
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "step/train_loss")]
    assert steps == list(range(2, 13, 2))  # 6 batches per epoch, 2 epochs, every 2nd step
    epochs = client.get_metric_history(run.info.run_id, "valid_accuracy")
    assert sorted(m.step for m in epochs) == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "evaluation", "model"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/labels.json"}
    # Artifacts sit beside the store, not in ./mlruns of whatever folder the job ran from.
    assert run.info.artifact_uri.startswith(artifact_location(store, "kennel-test"))
    assert load_job(record.id).mlflow_run_id == run.info.run_id


class Snapshot(Observer):
    """Keeps the last epoch's checkpoint, as the checkpoint observer would write it."""

    def on_epoch_end(self, state) -> None:
        self.checkpoint = state.snapshot()


def test_resume_reopens_the_same_run(store: str) -> None:
    record = new_job("resumed")
    first = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store)
    saver = Snapshot()
    fit([first, saver], epochs=1)
    checkpoint = saver.checkpoint  # what the checkpoint observer saved before the process died
    assert checkpoint["observers"]["MLflowTracker"]["run_id"] == first.run_id

    fresh = JobRecord.from_dict({**record.to_dict(), "mlflow_run_id": None})  # only the checkpoint knows the run
    second = MLflowTracker(fresh, CONFIG, experiment="kennel-test", tracking_uri=store)
    _, state = fit([second], epochs=2, checkpoint=checkpoint)
    fresh.status = state.status
    second.finish(fresh)

    assert second.run_id == first.run_id
    client = second.client
    experiment_id = client.get_run(first.run_id).info.experiment_id
    named = [r for r in client.search_runs([experiment_id]) if r.info.run_name == "resumed"]
    assert len(named) == 1
    assert named[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "valid_accuracy")) == [1, 2]


class Boom(Observer):
    def on_epoch_end(self, state) -> None:
        raise RuntimeError("boom")


def test_a_crash_marks_the_run_failed(store: str) -> None:
    record = new_job("crashed")
    tracker = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store)
    with pytest.raises(RuntimeError, match="boom"):
        fit([tracker, Boom()])
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["kennel.error"]
    record.status, record.error = "failed", "RuntimeError: boom"
    tracker.finish(record)
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"


def test_finish_without_a_fit_still_records_the_job(store: str) -> None:
    record = new_job("never-started")
    tracker = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store)
    record.status, record.error = "failed", "ValueError: no images"
    tracker.finish(record)
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["kennel.error"] == "ValueError: no images"


@pytest.mark.parametrize("uri", ["bogus://nowhere", "http://127.0.0.1:9"])
def test_a_broken_store_does_not_break_training(
    uri: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    # MLflow's HTTP client retries an unreachable server with backoff for minutes: the tracker must give up before
    # it sends anything. A request that does reach it is refused at once, so a regression fails here quickly.
    sent: list[str] = []

    def refuse(session, request, **kwargs):
        sent.append(request.url)
        raise requests.ConnectionError(f"the test refuses {request.url}")

    monkeypatch.setattr(requests.Session, "send", refuse)
    record = new_job("untracked")
    tracker = MLflowTracker(record, CONFIG, tracking_uri=uri)
    with caplog.at_level(logging.WARNING, logger="kennel.observers.tracking"):
        _, state = fit([tracker])
        record.status = state.status
        tracker.finish(record)
    assert state.status == "completed"
    assert not tracker.enabled
    assert "MLflow tracking disabled" in caplog.text
    assert sent == []


def test_flatten_params_makes_dotted_bounded_strings() -> None:
    flat = flatten_params({"a": {"b": 1, "c": {"d": True}}, "e": [1, 2], "long": "x" * 2000, "empty": {}})
    assert flat["a.b"] == "1" and flat["a.c.d"] == "True" and flat["e"] == "[1, 2]" and flat["empty"] == "{}"
    assert len(flat["long"]) == 500 and flat["long"].endswith("...")


def test_artifact_location_is_beside_a_sqlite_store(tmp_path: Path) -> None:
    assert (
        artifact_location(f"sqlite:///{tmp_path / 'm.db'}", "my study")
        == (tmp_path / "mlartifacts" / "my-study").as_uri()
    )
    assert artifact_location("http://tracking:5000", "kennel") is None


@pytest.mark.slow
def test_parallel_workers_can_share_a_new_store(tmp_path: Path) -> None:
    """Trials started together on a fresh SQLite file must not race through MLflow's table migrations."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = f"from kennel.mlflow_store import init_store; init_store('study', {uri!r})"
    workers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    errors = [w.communicate(timeout=120)[1].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], errors


def test_a_run_whose_files_cannot_be_copied_ends_failed_and_says_why(store: str, monkeypatch) -> None:
    """A full disk under the store while the job's files are copied: the run is closed FAILED, not left RUNNING,
    and the error reaches the job (which then fails)."""
    import errno

    from kennel.observers.tracking import TrackingError

    record = new_job("disk-full")
    tracker = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store)
    _, state = fit([tracker])
    record.status = state.status

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracker.client, "log_artifact", full)
    with pytest.raises(TrackingError, match="No space left on device"):
        tracker.finish(record)
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"


def test_a_tracker_turned_off_mid_job_still_closes_its_run(store: str) -> None:
    """An error mid-run turns the tracker quiet; the run it opened is still ended with the job's status."""
    record = new_job("quiet")
    tracker = MLflowTracker(record, CONFIG, experiment="kennel-test", tracking_uri=store)
    fit([tracker])
    tracker.enabled = False  # as after a failed write during the job
    record.status = "completed"
    tracker.finish(record)
    assert tracker.client.get_run(tracker.run_id).info.status == "FINISHED"

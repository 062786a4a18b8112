"""Training jobs end to end on a generated dataset and the tiny backbone: records, files, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, kennel, sample_with_mistakes, section_statuses, tiny_config

from kennel.config import load_config
from kennel.job import resume, train
from kennel.job.run import JobFailed
from kennel.jobs import JobDir, list_jobs, load_job
from kennel.profiler import Profile


def test_frozen_backbone_job_trains_on_cached_features(dataset: Path):
    record = train(tiny_config(dataset, epochs=3, **{"optim.lr": 0.1}), stream=None)
    assert record.status == "completed"
    assert record.metrics["epochs_run"] == 3
    assert {"test_accuracy", "test_top5", "best_valid_accuracy", "feature_seconds"} <= set(record.metrics)
    folder = record.path
    assert (folder / "config.yaml").is_file() and (folder / "checkpoints" / "last.pt").is_file()
    assert [e["epoch"] for e in JobDir(folder).read_metrics("epoch")] == [1, 2, 3]
    assert load_config(folder / "config.yaml").epochs == 3  # the resolved config is saved and re-readable

    again = train(tiny_config(dataset, epochs=1), stream=None)
    assert again.metrics.get("feature_seconds", 0) < record.metrics["feature_seconds"]  # the cache was hit
    assert [j.id for j in list_jobs()] == [again.id, record.id]


def test_a_head_on_cached_features_trains_and_is_fitted_on_one_thread(dataset: Path, monkeypatch):
    """Small tensor operations: a second thread would only make each wait for it (a time slice under load)."""
    import torch

    import kennel.heads
    from kennel.engine import Observer

    threads = {"job": torch.get_num_threads(), "steps": set(), "logistic": []}

    class Threads(Observer):
        def on_batch_end(self, state) -> None:
            threads["steps"].add(torch.get_num_threads())

    real = kennel.heads.fit_logistic

    def fit_logistic(*args, **kwargs):
        threads["logistic"].append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(kennel.heads, "fit_logistic", fit_logistic)
    record = train(tiny_config(dataset, epochs=1, head="best"), [Threads()], stream=None)
    assert record.status == "completed" and threads["steps"] == {1} and threads["logistic"] == [1]
    assert torch.get_num_threads() == threads["job"]  # as they were, for what comes after the job


def test_fine_tuning_job_learns_the_sample(dataset: Path):
    record = train(tiny_config(dataset, epochs=6, **{"model.freeze": 0, "optim.lr": 0.03}), stream=None)
    assert record.status == "completed"
    assert record.metrics["best_valid_accuracy"] >= 0.8


def test_metric_lines_on_stdout_are_regex_readable(dataset: Path, capsys: pytest.CaptureFixture):
    import re

    train(tiny_config(dataset, epochs=2), stream=sys.stdout)
    out = capsys.readouterr().out  # not a terminal: lines of at most 80 columns, folded between name=value fields
    assert len([line for line in out.splitlines() if line.startswith("[epoch")]) == 2
    assert all(len(line) <= 80 for line in out.splitlines())
    values = [float(v) for line in out.splitlines() for v in re.findall(r"valid_accuracy=([0-9.eE+-]+);?", line)]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)


def test_early_stopping_ends_the_job_with_its_reason(dataset: Path):
    # A learning rate of zero never improves the validation loss, so patience 1 stops after epoch 2.
    record = train(tiny_config(dataset, epochs=10, early_stopping=1, **{"optim.lr": 1e-12}), stream=None)
    assert record.status == "stopped"
    assert "early stopping" in record.stop_reason
    assert record.metrics["epochs_run"] == 2


def _kill_when(path: Path, predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"job ended before it could be killed: {process.stderr.read()}")
        if predicate(path):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting to kill the job")


@pytest.mark.slow
def test_job_killed_mid_epoch_resumes_to_the_full_epoch_count(dataset: Path, kennel_home: Path):
    """SIGKILL a real `kennel train` process mid-epoch, then `kennel train --resume` it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Fine-tuning on photos, one image per step with a slow-enough loop so the kill lands mid-epoch.
    args = [
        sys.executable, "-m", "kennel", "train", "--data", str(dataset), "--model", "tiny",
        "--set", "model.pretrained=false", "--freeze", "0", "--epochs", "4", "--batch-size", "1",
        "--no-tracking", "--set", "export_onnx=false", "--set", "log_every=1", "--name", "killme",
        "--set", "data.workers=0",
    ]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def mid_second_epoch(home: Path) -> bool:
        jobs = list(home.glob("jobs/*/metrics.jsonl"))
        steps = JobDir(jobs[0].parent).read_metrics("step") if jobs else []
        return any(s["epoch"] == 2 and s["global_step"] >= 40 for s in steps)

    _kill_when(kennel_home, mid_second_epoch, process)
    killed = load_job("killme")
    assert killed.status == "running"  # the record still says so: the process died without a word
    assert len(JobDir(killed.path).read_metrics("epoch")) == 1

    done = subprocess.run(
        [sys.executable, "-m", "kennel", "train", "--resume", "killme", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "completed"
    assert record["metrics"]["epochs_run"] == 4
    epochs = [e["epoch"] for e in JobDir(killed.path).read_metrics("epoch")]
    assert epochs == [1, 2, 3, 4]  # epoch 2 ran again from the checkpoint of epoch 1; nothing twice
    timeline = [e["event"] for e in Profile.load(killed.path).events]  # the profiler appends across the kill
    assert timeline == ["job_start", "fit_start", "job_start", "fit_start", "fit_end", "job_end"]


def test_resume_of_a_completed_job_changes_nothing(dataset: Path):
    record = train(tiny_config(dataset, epochs=1), stream=None)
    assert resume(record.id, stream=None).to_dict() == load_job(record.id).to_dict()


def test_lines_a_killed_run_wrote_after_its_last_checkpoint_are_dropped_on_resume(dataset: Path):
    """A kill between an epoch's metric line and its checkpoint: the resumed run repeats that epoch, once."""
    from kennel.observers.checkpoint import load_checkpoint, save_checkpoint

    record = train(tiny_config(dataset, epochs=2), stream=None)
    checkpoints, metrics = record.path / "checkpoints", record.path / "metrics.jsonl"
    # Roll the job back to just after epoch 1's metric line: epoch 2's checkpoint never made it to disk.
    last = load_checkpoint(checkpoints / "last.pt")
    lines = metrics.read_text().splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "epoch")
    step_one = json.loads(lines[first_epoch])["global_step"]
    epoch_one = dict(last, epoch=1, global_step=step_one, history=last["history"][:1])
    save_checkpoint(checkpoints / "last.pt", epoch_one)
    metrics.write_text("".join(lines) + '{"kind": "step", "epo')  # epoch 2's lines stay, and one cut short
    job = load_job(record.id)
    job.status = "running"
    job.save()

    resumed = resume(record.id, stream=None)
    assert resumed.status == "completed"
    assert [e["epoch"] for e in JobDir(metrics.parent).read_metrics("epoch")] == [1, 2]
    steps = [s["global_step"] for s in JobDir(metrics.parent).read_metrics("step")]
    assert steps == sorted(set(steps))  # no step logged twice
    assert metrics.read_text().endswith("\n")


def test_a_job_interrupted_by_ctrl_c_keeps_the_metrics_of_its_finished_epochs(dataset: Path):
    from kennel.engine import Observer

    class CtrlC(Observer):
        def on_batch_end(self, state):
            if state.epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(dataset, epochs=4, name="interrupted"), observers=[CtrlC()], stream=None)
    record = load_job("interrupted")
    assert record.status == "stopped" and record.error.startswith("KeyboardInterrupt")
    assert record.metrics["epochs_run"] == 2 and "best_valid_accuracy" in record.metrics


def test_a_damaged_last_checkpoint_resumes_from_the_epoch_before(dataset: Path, caplog):
    record = train(tiny_config(dataset, epochs=3, name="damaged"), stream=None)
    checkpoints = record.path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt", "previous.pt"]
    (checkpoints / "last.pt").write_bytes((checkpoints / "last.pt").read_bytes()[:200])  # cut short
    job = load_job(record.id)
    job.status = "running"
    job.save()
    resumed = resume(record.id, stream=None)
    assert resumed.status == "completed"
    assert "last.pt is damaged" in caplog.text and "resuming from previous.pt" in caplog.text
    assert [e["epoch"] for e in JobDir(record.path).read_metrics("epoch")] == [1, 2, 3]

    for name in ("last.pt", "previous.pt"):  # nothing left to continue from: one line, no traceback
        (checkpoints / name).write_bytes(b"not a checkpoint")
    job = load_job(record.id)
    job.status = "running"
    job.save()
    result = kennel("train", "--resume", record.id)
    assert result.exit_code == 1  # the request was fine; the job's files cannot be read
    assert "cannot resume from" in result.output and "previous.pt is" in result.output
    assert "Traceback" not in result.output


def test_resuming_a_job_that_does_not_exist_is_one_line() -> None:
    result = kennel("train", "--resume", "nosuch")
    assert result.exit_code == 2 and "error: no job 'nosuch'" in result.output and "Traceback" not in result.output


def test_the_record_says_completed_only_with_its_end_and_the_report_shows_both(dataset: Path, monkeypatch):
    """A job killed at any point reads "running" (or failed), never "completed" without an end time."""
    from kennel.jobs import JobRecord

    saves, real_save = [], JobRecord.save

    def watched(self):
        saves.append((self.status, self.ended))
        real_save(self)

    monkeypatch.setattr(JobRecord, "save", watched)
    record = train(tiny_config(dataset, epochs=1), stream=None)
    assert saves[-1][0] == "completed" and saves[-1][1] is not None
    assert all(ended is not None for status, ended in saves if status == "completed")
    assert [status for status, _ in saves].count("completed") == 1
    from kennel.report.section import duration

    page = (record.path / "report.html").read_text()
    assert "status-completed" in page and f"<td>{duration(record.duration_s)}</td>" in page


def test_a_full_disk_during_the_export_fails_the_job_and_says_so(dataset: Path, monkeypatch):
    """Out of space while writing the model is not an ONNX problem to work around: the job fails with the cause."""
    import errno

    import kennel.inference.export

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kennel.inference.export, "_export", full)
    with pytest.raises(JobFailed, match="No space left"):
        train(tiny_config(dataset, epochs=1, name="full", export_onnx=True), stream=None)
    record = load_job("full")
    assert record.status == "failed" and "No space left on device" in record.error and record.ended is not None
    assert "onnx_export_failed" not in record.metrics


def test_an_export_that_failed_for_want_of_space_fails_the_job(dataset: Path, monkeypatch):
    """Some exporters turn a short write into a parse error of their own file: the free space tells."""
    import shutil
    from types import SimpleNamespace

    import kennel.inference.export

    def garbled(*args, **kwargs):
        raise ValueError("Failed to find proper ai.onnx domain")

    monkeypatch.setattr(kennel.inference.export, "_export", garbled)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000))
    with pytest.raises(JobFailed, match="No space left on device"):
        train(tiny_config(dataset, epochs=1, name="garbled", export_onnx=True), stream=None)
    assert load_job("garbled").status == "failed"


def test_an_export_the_exporter_cannot_do_keeps_the_pytorch_model(dataset: Path, monkeypatch):
    import kennel.inference.export

    def untraceable(*args, **kwargs):
        raise RuntimeError("an operator the exporter cannot trace")

    monkeypatch.setattr(kennel.inference.export, "_export", untraceable)
    record = train(tiny_config(dataset, epochs=1, export_onnx=True), stream=None)
    assert record.status == "completed" and record.metrics["onnx_export_failed"] == 1.0
    assert (Path(record.artifact) / "model.safetensors").is_file() and not (
        Path(record.artifact) / "model.onnx"
    ).exists()


def _tiny_flags(**overrides: object) -> list[str]:
    """``kennel train`` flags for the :data:`TINY` job, with more dotted keys."""
    flags = []
    for key, value in {**TINY, **overrides}.items():
        flags += ["--set", f"{key}={json.dumps(value)}"]
    return flags


def test_kennel_train_leaves_the_gallery_heatmaps_to_a_report_process_after_the_job(tmp_path: Path, monkeypatch):
    """The job does not wait for Grad-CAM: its page is written without the heatmaps, and ``kennel report JOB``, in
    a process of its own at low priority once the record is final, makes them from the artifact."""
    from kennel.job import run as job_run

    dataset = sample_with_mistakes(tmp_path)  # two test classes swapped: mistakes for sure

    started: list[list[str]] = []

    def start(command: list[str]) -> int:  # recorded rather than run: the test runs the command itself
        assert load_job(command[-1]).status == "completed"  # once the record is final
        started.append(command)
        return 1

    monkeypatch.setattr(job_run, "_start_in_background", start)
    result = kennel("train", "--data", dataset, "--epochs", "1", "--json", *_tiny_flags())
    assert result.exit_code == 0, result.output
    record = load_job(json.loads(result.stdout.splitlines()[-1])["id"])
    evaluation = record.path / "evaluation"
    assert json.loads((evaluation / "mistakes.json").read_text())  # a gallery to make
    assert not (evaluation / "heatmaps.json").exists()
    page = (record.path / "report.html").read_text()
    assert f"kennel report {record.id} makes them" in page and "looked-toggle" not in page
    assert started == [[sys.executable, "-m", "kennel", "report", str(record.path)]]
    assert kennel(*started[0][3:]).exit_code == 0  # what that process runs
    assert json.loads((evaluation / "heatmaps.json").read_text())
    assert section_statuses((record.path / "report.html").read_text())["mistakes"] == "ok"


def test_a_job_a_rule_stops_exits_3_and_names_the_rule(dataset: Path):
    """A stop rule's job keeps its model but exits 3, so a script does not take it for a finished one; a job
    early stopping ends has run its course and exits 0."""
    rule = {
        "debug.imports": ["stopping_rule"],
        "debug.rules.StopsHighLearningRates.lr_above": 0.1,
        "optim.warmup_epochs": 0,  # the first step runs at the full rate
    }
    stopped = kennel("train", "--data", dataset, "--lr", "0.3", "--epochs", "2", *_tiny_flags(**rule))
    assert stopped.exit_code == 3, stopped.output
    job = list_jobs()[0]
    assert job.status == "stopped" and job.artifact and Path(job.artifact).is_dir()
    # The line folds between its fields to 80 columns: read as one.
    assert " ".join(stopped.stderr.split()).endswith(
        f"stopped by debugger rule StopsHighLearningRates (exit 3); `kennel debug {job.id}` shows why"
    )
    patient = {"early_stopping": 1, **rule}  # the rule does not fire below 0.1, early stopping ends the job
    ended = kennel("train", "--data", dataset, "--lr", "1e-12", "--epochs", "10", *_tiny_flags(**patient))
    assert ended.exit_code == 0, ended.output
    assert "early stopping" in list_jobs()[0].stop_reason and "stopped by" not in ended.stderr

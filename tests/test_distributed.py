"""Data-parallel training: `kennel train --processes 2` runs two gloo processes under torchrun on the CPU.

Two processes with the same global batch must train exactly like one (same shuffle, each step's photos split in
two, gradients averaged), only rank 0 writes the job, and a killed two-process job resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kennel import distributed
from kennel.config import load_config
from kennel.distributed import Ranks, ShardSampler, train_sampler
from kennel.findings import NOT_APPLICABLE
from kennel.job import train
from kennel.jobs import JobDir, list_jobs, load_job
from kennel.profiler import Profile

# No dropout and no augmentation: nothing random but the shuffle, which both set-ups share.
BASE = {
    "model.backbone": "tiny",
    "model.pretrained": False,
    "model.dropout": 0.0,
    "data.augment": "none",
    "data.workers": 0,
    "tracking": False,
    "export_onnx": False,
    "epochs": 3,
    "data.batch_size": 8,
    "optim.lr": 0.05,
}
SETUPS = {
    "cached-features": {},
    "photos-frozen-backbone": {"feature_cache": False},
}
COMPARED = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "test_accuracy")


def _flags(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def _failure(stderr: str) -> str:
    """The part of torchrun's output that says what went wrong: from the first traceback or abort on."""
    marks = [i for i in (stderr.find("Traceback"), stderr.find("terminate called")) if i >= 0]
    return stderr[min(marks, default=max(len(stderr) - 4000, 0)) :][:8000]


def _kennel_train(dataset: Path, settings: dict, *extra: str, timeout: float = 300) -> dict:
    command = [sys.executable, "-m", "kennel", "train", "--data", str(dataset), *_flags(settings), *extra, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, _failure(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("setup", SETUPS)
def test_two_processes_train_like_one_with_the_same_global_batch(dataset: Path, kennel_home: Path, setup: str):
    settings = {**BASE, **SETUPS[setup]}
    one = train(load_config(overrides={**settings, "data.root": str(dataset)}), stream=None)
    two = _kennel_train(dataset, settings, "--processes", "2", "--name", "two")

    assert two["status"] == "completed" and two["metrics"]["epochs_run"] == 3
    assert two["params"]["processes"] == 2 and "processes" not in one.params
    for name in COMPARED:
        assert two["metrics"][name] == pytest.approx(one.metrics[name], abs=1e-5), name
    # Some learning happened, so equal metrics say something.
    assert one.metrics["train_loss"] < JobDir(one.path).read_metrics("step")[0]["train_loss"]

    # Rank 0 alone wrote the job: one record, one set of checkpoints, one artifact, each epoch logged once.
    assert [j.id for j in list_jobs()] == [two["id"], one.id]
    folder = Path(two["job_dir"])
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.pt", "last.pt", "previous.pt"]
    assert Path(two["artifact"]).is_dir() and (Path(two["artifact"]) / "model.safetensors").is_file()
    assert [e["epoch"] for e in JobDir(folder).read_metrics("epoch")] == [1, 2, 3]
    # Each rank recorded its own steps; rank 0's profile reads both, for LoadBalancing.
    profile = Profile.load(folder)
    assert profile.world_size == 2 and len(profile.other_ranks[1]) == len(profile.steps) > 0
    balance = profile.rule_results()["LoadBalancing"]
    assert balance.status != NOT_APPLICABLE and {"rank0_ms", "rank1_ms"} <= set(balance.numbers), balance


@pytest.mark.slow
def test_a_killed_two_process_job_resumes_where_an_uninterrupted_one_ends(dataset: Path, kennel_home: Path):
    # Fine-tuning the whole tiny network, one photo per rank per step.
    settings = {**BASE, "model.freeze": 0, "data.batch_size": 2, "epochs": 6, "optim.lr": 0.01, "log_every": 1}
    whole = _kennel_train(dataset, settings, "--processes", "2", "--name", "whole")

    command = [sys.executable, "-m", "kennel", "train", "--data", str(dataset), *_flags(settings)]
    command += ["--processes", "2", "--name", "killme"]
    # Its own session: the kill takes the launcher, torchrun and both ranks at once, like a lost machine.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, f"the job ended before it could be killed: {process.stderr.read()[-2000:]}"
        logs = list(kennel_home.glob("jobs/*killme*/metrics.jsonl"))
        if logs and JobDir(logs[0].parent).read_metrics("epoch"):  # the first epoch ended: its checkpoint is written
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.05)
    else:
        raise AssertionError("timed out waiting to kill the job")
    killed = load_job("killme")
    assert killed.status == "running"  # the record still says so: the processes died without a word
    assert 1 <= len(JobDir(killed.path).read_metrics("epoch")) < 6

    done = _kennel_train(dataset, {}, "--resume", "killme", "--processes", "2")
    assert done["status"] == "completed" and done["metrics"]["epochs_run"] == 6 and done["params"]["processes"] == 2
    # The cut-short epoch ran again from the last checkpoint; no epoch is logged twice.
    assert [e["epoch"] for e in JobDir(killed.path).read_metrics("epoch")] == [1, 2, 3, 4, 5, 6]
    for name in COMPARED:
        assert done["metrics"][name] == pytest.approx(whole["metrics"][name], abs=1e-4), name


@pytest.mark.slow
def test_when_one_rank_fails_the_job_says_which_and_why(dataset: Path, kennel_home: Path, tmp_path: Path):
    """torchrun stops rank 0 when rank 1 fails: the record must not be left saying "running"."""
    import shutil

    from kennel.data.layout import load_layout

    photos = shutil.copytree(dataset, tmp_path / "photos")
    files = load_layout(photos)["train"].files
    sampler = train_sampler(files, Ranks(rank=1, world_size=2), seed=0)
    sampler.set_epoch(0)
    broken = files[next(iter(sampler))][0]  # the first photo rank 1 decodes
    broken.write_bytes(b"not a jpeg")

    settings = {**BASE, "feature_cache": False}
    command = [sys.executable, "-m", "kennel", "train", "--data", str(photos), *_flags(settings), "--processes", "2"]
    done = subprocess.run([*command, "--name", "broken"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    record = load_job("broken")
    assert record.status == "failed", record
    assert record.error.startswith("rank 1: ImageError") and broken.name in record.error


@pytest.mark.slow
def test_a_two_process_job_a_rule_stops_exits_3_like_one_process(dataset: Path, kennel_home: Path):
    """torchrun takes a rank's exit 3 for a failure: rank 0 exits 0 and the launcher exits 3 from the record."""
    rule = {
        "debug.imports": ["stopping_rule"],  # tests/stopping_rule.py, found by the ranks through PYTHONPATH
        "debug.rules.StopsHighLearningRates.lr_above": 0.1,
        "optim.warmup_epochs": 0,  # the first step runs at the full rate
        "optim.lr": 0.3,
    }
    command = [sys.executable, "-m", "kennel", "train", "--data", str(dataset), *_flags({**BASE, **rule})]
    command += ["--processes", "2", "--name", "ruled"]
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3, _failure(done.stderr)
    job = load_job("ruled")
    assert job.status == "stopped" and job.stop_reason.startswith("debugger rule StopsHighLearningRates")
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr
    assert " ".join(done.stderr.split()).endswith(  # folded between its fields to 80 columns
        f"stopped by debugger rule StopsHighLearningRates (exit 3); `kennel debug {job.id}` shows why"
    )


@pytest.mark.slow
def test_a_thread_busy_in_native_code_when_a_rank_exits_cannot_abort_it(dataset: Path, kennel_home: Path):
    """A rank ends its process once its job is written, without finalizing the interpreter: a thread still in
    native code then (gloo's, which DDP keeps past destroy_process_group, or any library's) would otherwise be
    ended by CPython as it takes the GIL back, and unwinding it through C++ aborts the rank (SIGABRT,
    "terminate called without an active exception"), so that a job that completed exits 1."""
    command = [sys.executable, "-m", "kennel", "train", "--data", str(dataset)]
    command += [*_flags({**BASE, "epochs": 1, "debug.imports": ["busy_at_exit"]}), "--processes", "2", "--name", "busy"]
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, _failure(done.stderr)
    assert "terminate called" not in done.stderr
    assert load_job("busy").status == "completed"


def test_the_global_batch_must_split_evenly(dataset: Path, monkeypatch: pytest.MonkeyPatch):
    from kennel.config import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="batch_size 8 is the global batch, split over 3 processes"):
        train(load_config(overrides={**BASE, "data.root": str(dataset)}), stream=None)


def test_shards_cover_each_epoch_once_and_shuffle_like_one_process():
    data = list(range(10))
    one = list(train_sampler(data, Ranks(), seed=3))
    shards = [list(train_sampler(data, Ranks(rank, 2), seed=3)) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == data
    assert one[0::2] == shards[0] and one[1::2] == shards[1]  # step k's global batch: the same photos
    evaluation = [list(ShardSampler(7, Ranks(rank, 3))) for rank in range(3)]
    assert sorted(i for shard in evaluation for i in shard) == list(range(7))  # no padding: each photo once


def test_one_process_needs_no_process_group():
    assert distributed.from_environment() == Ranks()
    rows = torch.arange(6).reshape(3, 2)
    assert distributed.gather_rows(rows, Ranks()) is rows
    assert distributed.any_rank(True, Ranks()) and not distributed.any_rank(False, Ranks())
    assert distributed.broadcast_text("job-1", Ranks()) == "job-1"


def test_launcher_drops_its_own_options_and_runs_torchrun():
    from kennel.launch import torchrun_command, without_options

    argv = ["train", "--data", "d", "--processes", "2", "--gpus=2", "--epochs", "3"]
    assert without_options(argv) == ["train", "--data", "d", "--epochs", "3"]
    command = torchrun_command(["train", "--data", "d"], 4)
    assert command[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=4" in command
    assert command[-4:] == ["kennel", "train", "--data", "d"]


@pytest.mark.slow
def test_a_batch_the_processes_cannot_share_fails_once_before_launching(dataset: Path):
    command = [sys.executable, "-m", "kennel", "train", "--data", str(dataset), "--processes", "3"]
    command += ["--batch-size", "32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("data.batch_size 32 is the global batch, split over 3 processes") == 1
    assert "launching" not in done.stderr  # torchrun never started


@pytest.mark.slow
def test_gpus_on_a_machine_without_enough_of_them_is_a_clear_error(dataset: Path):
    if torch.cuda.device_count() >= 64:
        pytest.skip("this machine has 64 GPUs")
    done = subprocess.run(
        [sys.executable, "-m", "kennel", "train", "--data", str(dataset), "--gpus", "64"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--gpus 64: this machine has" in done.stderr and "--processes" in done.stderr

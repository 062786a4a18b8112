"""``kennel tune``, ``kennel jobs studies | best STUDY`` and ``kennel report STUDY`` from the command line,
including a tuning process killed with SIGKILL and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import kennel, space_file

from kennel.config import load_config
from kennel.jobs import JobNotFound, list_jobs, load_job
from kennel.tune import load_study_record
from kennel.tune.results import INTERRUPTED, RETRY_OF, outcome
from kennel.tune.study import open_study

TINY = ["--set", "model.backbone=tiny", "--set", "model.pretrained=false", "--no-tracking"]
SPACE = {
    "parameters": {
        "optim.lr": {"type": "float", "low": 0.001, "high": 0.5, "log": True},
        "epochs": {"type": "int", "low": 2, "high": 3},
    }
}


@pytest.fixture
def space(tmp_path: Path) -> Path:
    return space_file(tmp_path / "space.yaml", SPACE)


def test_tune_help_names_the_strategies_pruners_and_spaces() -> None:
    result = kennel("tune", "--help")
    assert result.exit_code == 0
    for word in ("tpe", "random", "grid", "cmaes", "median", "hyperband", "--parallel", "--storage", "seed"):
        assert word in result.output


BAD_SPACES = {
    "unknown key": ({"optim.lrr": {"type": "float", "low": 0.1, "high": 1}}, "parameter optim.lrr: not a training"),
    "inverted range": ({"epochs": {"type": "int", "low": 9, "high": 3}}, "parameter epochs: low (9) must be below"),
    "bad value": ({"model.freeze": {"type": "categorical", "choices": ["all", "some"]}}, "parameter model.freeze"),
}


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_a_planted_bad_space_fails_clearly_before_any_trial(dataset: Path, tmp_path: Path, case: str) -> None:
    parameters, message = BAD_SPACES[case]
    bad = space_file(tmp_path / "bad.yaml", {"parameters": parameters})
    result = kennel("tune", "--data", dataset, "--space", bad, "--study", "bad", *TINY)
    assert result.exit_code == 2
    assert message in result.output
    assert list_jobs() == []


def test_grid_over_a_continuous_space_says_what_to_add(dataset: Path, space: Path) -> None:
    result = kennel("tune", "--data", dataset, "--space", space, "--strategy", "grid", *TINY)
    assert result.exit_code == 2
    assert "parameter optim.lr: the grid strategy needs a finite set of values; give it `grid: [...]`" in result.output


def test_unknown_strategy_and_a_running_study_are_refused(dataset: Path, space: Path, kennel_home: Path) -> None:
    result = kennel("tune", "--data", dataset, "--space", space, "--strategy", "annealing", *TINY)
    assert (
        result.exit_code == 2
        and "unknown tuning strategy 'annealing'; known: cmaes, grid, random, tpe" in result.output
    )
    assert kennel("tune", "--data", dataset, "--space", space, "--study", "s", "-n", "1", *TINY).exit_code == 0
    record = load_study_record("s")
    record.status, record.pid = "running", os.getpid()  # as if this process were tuning it now
    record.save()
    result = kennel("tune", "--study", "s", "-n", "2")
    assert result.exit_code == 2 and f"study s is running in process {os.getpid()}" in result.output


@pytest.mark.slow
def test_tune_then_best_then_report(dataset: Path, space: Path, kennel_home: Path) -> None:
    result = kennel("tune", "--data", dataset, "--space", space, "--study", "lr", "-n", "3", "--pruner", "none", *TINY)
    assert result.exit_code == 0, result.output
    assert result.output.count("trial ") >= 3 and "best config:" in result.output

    studies = kennel("jobs", "studies", "--json")
    (study,) = json.loads(studies.output)
    assert study["name"] == "lr" and study["status"] == "completed" and study["counts"] == {"complete": 3}
    assert "lr" in kennel("jobs", "studies").output
    assert json.loads(kennel("jobs", "studies", "--format", "json").output) == json.loads(studies.output)
    header, row = [line.split("\t") for line in kennel("jobs", "studies").output.splitlines()]  # piped: TSV
    listed = dict(zip(header, row, strict=True))
    assert (listed["study"], listed["complete"]) == ("lr", "3")
    assert float(listed["best"]) == pytest.approx(study["best"]["value"], rel=1e-5)  # TSV: 6 significant digits

    best = json.loads(kennel("jobs", "best", "lr", "--json").output)
    trials = open_study(load_study_record("lr")).trials
    top = max(trials, key=lambda t: t.value)
    assert (best["trial"], best["value"], best["params"]) == (top.number, top.value, top.params)
    assert best["job"]["id"] == top.user_attrs["kennel.job_id"]
    config = load_config(best["config"])  # kennel train --config takes it as it is
    assert (config.optim.lr, config.epochs) == (top.params["optim.lr"], top.params["epochs"])
    assert config.head == "best" and config.export_onnx  # the retrain picks its head and exports as usual
    shown = kennel("jobs", "best", "lr")
    assert shown.exit_code == 0 and "retrain: kennel train --config" in shown.output and "optim.lr" in shown.output

    report = kennel("report", "lr")
    assert report.exit_code == 0 and Path(report.output.strip()) == kennel_home / "studies" / "lr" / "report.html"
    assert kennel("jobs", "--study", "lr", "--json").output.count('"study": "lr"') == 3
    header, *rows = [line.split("\t") for line in kennel("jobs", "--study", "lr").output.splitlines()]
    lrs = [float(dict(zip(header, row, strict=True))["lr"]) for row in rows]  # 6 digits: the trials still differ
    assert sorted(lrs) == pytest.approx(sorted(t.params["optim.lr"] for t in trials), rel=1e-5)
    table = kennel("jobs", "--study", "lr", "--format", "table").output
    assert all(f"{lr:.4g}" in table for lr in lrs) and "…" not in table


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"kennel tune ended before it could be killed: {process.stderr.read()[-2000:]}")
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the study to make progress")


def _finished_and_running(name: str) -> tuple[dict[int, float], bool]:
    if not (Path(os.environ["KENNEL_HOME"]) / "studies" / name / "study.json").is_file():
        return {}, False
    trials = open_study(load_study_record(name)).get_trials(deepcopy=False)
    finished = {t.number: t.value for t in trials if outcome(t) in ("complete", "pruned")}
    return finished, any(t.state.name == "RUNNING" for t in trials)


@pytest.mark.slow
def test_a_killed_tuning_process_restarts_without_losing_a_finished_trial(dataset: Path, space: Path) -> None:
    """SIGKILL `kennel tune --parallel 2` and its workers while trials run, then run `kennel tune --study NAME`
    again."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "kennel", "tune", "--study", "crash"]
    first = [*command, "--data", str(dataset), "--space", str(space), "-n", "6", "-p", "2", "--pruner", "none", *TINY]
    process = subprocess.Popen(
        first, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )

    def some_done_and_more_running() -> bool:
        finished, running = _finished_and_running("crash")
        return len(finished) >= 2 and running

    _wait_for(some_done_and_more_running, process)
    # The runner and its workers at once, as a crash or the OOM killer takes them: a worker that outlived its
    # runner for a moment could finish its trial, and then no trial would have been cut short.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept, _ = _finished_and_running("crash")

    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["status"] == "completed"
    trials = open_study(load_study_record("crash")).get_trials(deepcopy=False)
    assert {t.number: t.value for t in trials if t.number in kept} == kept  # every finished trial kept as it was
    assert record["counts"].get("complete", 0) == 6  # and the study completed its budget
    interrupted = [t for t in trials if t.user_attrs.get(INTERRUPTED)]
    assert interrupted  # the trials the kill cut short ...
    retries = {t.user_attrs.get(RETRY_OF): t for t in trials if t.user_attrs.get(RETRY_OF) is not None}
    for trial in interrupted:  # ... ran again with the same values (those it had: a kill may fall between two
        # of its suggestions, and the retry then draws the rest)
        retry = retries[trial.number]
        assert trial.params.items() <= retry.params.items() and outcome(retry) == "complete"
        # Its job was marked stopped on restart, unless the kill fell between the job's end and the study
        # hearing of it (then the job had completed, and the trial still ran again, since its value was lost), or
        # before the job's record was written (the trial names its job first): then there is no job to close.
        try:
            status = load_job(trial.user_attrs["kennel.job"]).status
        except JobNotFound:
            status = None
        assert status in ("stopped", "completed", None)


@pytest.mark.slow
def test_the_demo_tune_step_runs_a_short_study_and_writes_its_page(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, kennel_home: Path
) -> None:
    from kennel.cli import demo

    monkeypatch.setattr(demo, "DEMO_TRIALS", 2)
    overrides = {"model.backbone": "tiny", "model.pretrained": False, "tracking": False, "export_onnx": False}
    run = demo.DemoRun(dataset, 0, overrides)
    demo.step_train(run)
    demo.step_tune(run)
    record = load_study_record(run.study)
    assert record.status == "completed" and sum(record.counts.values()) == 2
    assert (kennel_home / "studies" / run.study / "report.html").is_file()


def test_weights_that_cannot_be_had_fail_in_one_line_before_a_study_exists(
    dataset: Path, space: Path, kennel_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `kennel train` does: a backbone whose weights are neither cached nor downloadable (no network) is a
    request it cannot use, said once, not a study whose every trial fails."""
    from kennel.models import weights

    def no_network(spec):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "available_offline", lambda spec: None)  # whatever this machine has cached
    monkeypatch.setattr(weights, "_torchvision_download", no_network)
    monkeypatch.setattr(weights, "_timm_download", no_network)
    result = kennel("tune", "--data", dataset, "--space", space, "--study", "offline", "--no-tracking", "-n", "1",
                    "--set", "model.backbone=resnet18")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no weights for 'resnet18' offline and the download failed")
    assert not (kennel_home / "studies").exists() or not list((kennel_home / "studies").iterdir())
    assert list_jobs() == []

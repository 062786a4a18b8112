"""``kennel tune --script``: a study whose every trial runs the user's own script with the trial's
hyperparameters, its objective read from the script's log lines, as SageMaker's HyperparameterTuner does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import kennel
from sagemaker_scripts import write_script

from kennel.jobs import JobDir, list_jobs
from kennel.script.config import ScriptConfig
from kennel.script.job import run_script
from kennel.script.tuning import ScriptPruner

# A script whose score peaks at lr 0.01 and batch size 64, printed once per epoch, a little higher each epoch.
SCORED = """
import argparse
import logging
import math
import sys

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--batch-size", type=int, required=True)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
for epoch in range(args.epochs):
    score = -(math.log10(args.lr) + 2) ** 2 - abs(args.batch_size - 64) / 512 + 0.01 * epoch
    logging.info(f"epoch {epoch}: score={score:.6f}")
"""

# The seed project's search space: the learning rate continuous on a log scale, batch size and epochs categorical.
SPACE = {
    "parameters": {
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "batch-size": {"type": "categorical", "choices": [32, 64, 128, 256, 512]},
        "epochs": {"type": "categorical", "choices": [1, 2]},
    }
}


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    return write_script(tmp_path / "code", SCORED, "hpo.py")


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


@pytest.mark.slow
def test_a_study_of_six_trials_two_at_a_time_finds_the_best_hyperparameters(scored: Path, space: Path):
    command = [
        sys.executable, "-m", "kennel", "tune", "--script", str(scored), "--hp", "seed=3",
        "--metric", "score=score=(-?[0-9.]+)", "--objective", "score", "--maximize", "--space", str(space),
        "--trials", "6", "--parallel", "2", "--study", "hpo", "--no-tracking", "--pruner", "none",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]

    trials = list_jobs(study="hpo")
    assert len(trials) == 6 and {t.status for t in trials} == {"completed"} and {t.kind for t in trials} == {"script"}
    for trial in trials:  # each trial's value is the last score it printed, its hyperparameters as the script got them
        points = JobDir(trial.path).read_metrics("script")
        assert len(points) == trial.params["epochs"] and trial.metrics["score"] == points[-1]["value"]
        assert trial.params["seed"] == 3 and set(trial.params) == {"lr", "batch-size", "epochs", "seed"}
    best_job = max(trials, key=lambda t: t.metrics["score"])

    result = kennel("jobs", "best", "hpo", "--json")
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    assert best["value"] == pytest.approx(best_job.metrics["score"])
    assert best["params"] == {k: best_job.params[k] for k in ("lr", "batch-size", "epochs")}
    arguments = best["arguments"].split()
    assert arguments[arguments.index("--batch-size") + 1] == str(best_job.params["batch-size"])
    assert arguments[arguments.index("--seed") + 1] == "3"  # the fixed hyperparameters come back too
    saved = json.loads(Path(best["config"]).read_text())
    assert saved["hyperparameters"] == best_job.params
    assert "arguments: " in done.stdout and "retrain: kennel run hpo.py" in done.stdout


class _AlwaysPrunes:
    """An Optuna trial stand-in whose pruner gives up on the second report."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reports) >= 2


def test_a_pruned_trial_stops_its_script(tmp_path: Path):
    script = write_script(
        tmp_path / "code",
        """
        import time
        for step in range(100):
            print(f"score={step / 100:.2f}", flush=True)
            time.sleep(0.2)
        print("finished", flush=True)
        """,
    )
    config = ScriptConfig.model_validate(
        {
            "entry_point": script.name,
            "source_dir": str(script.parent),
            "tracking": False,
            "metrics": [{"Name": "score", "Regex": "score=([0-9.]+)"}],
        }
    )
    trial = _AlwaysPrunes()
    record = run_script(config, observers=[ScriptPruner(trial, "score", "median")], echo=False)
    assert record.status == "pruned" and record.stop_reason.startswith("pruned by the median pruner at report 1")
    assert trial.reports == [(0.0, 0), (0.01, 1)]
    assert "finished" not in (record.path / "logs" / "stdout.log").read_text() and record.duration_s < 20


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--objective", "score"], "--script needs --space FILE"),
        (["--space", "{space}"], "--script needs --objective NAME, one of its --metric names (score)"),
        (["--objective", "loss", "--space", "{space}"], "--objective loss: not one of the script's metrics (score)"),
        (["--objective", "score", "--space", "{space}", "--maximize", "--minimize"], "contradict each other"),
    ],
)
def test_a_scripts_study_needs_its_objective_among_its_metrics_and_a_space(
    scored: Path, space: Path, args: list[str], said: str
):
    given = [a.replace("{space}", str(space)) for a in args]
    result = kennel("tune", "--script", scored, "--metric", "score=score=(-?[0-9.]+)", *given)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and said in result.output


def test_a_trials_finding_lines_are_said_among_the_trial_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    from kennel.findings import labelled
    from kennel.script.tuning import FindingLines

    lines = FindingLines()
    with labelled("trial 4"):
        for line, stream in [
            ("debugger rule Overfit: Validation loss 1.2 is 40% above the training loss 0.86.", "stderr"),
            ("Epoch 3: valid loss: 1.2", "stderr"),
            ("debugger rule on stdout is the script's own print", "stdout"),
        ]:
            lines.on_line(None, line, stream)
    said = capsys.readouterr().err.replace("\n    ", " ").splitlines()  # a long line folds, indented
    assert said == ["trial 4: debugger rule Overfit: Validation loss 1.2 is 40% above the training loss 0.86."]

"""``kennel run`` and ``kennel tune --script`` on real photos (../shared/data/breeds4, in dogImages' layout): the
SageMaker-shaped script of :mod:`sagemaker_scripts` reads them with torchvision's ImageFolder, as the seed
project's scripts do, grayscale, CMYK and PNG-under-.jpg files included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import shared_data
from sagemaker_scripts import METRIC_DEFINITIONS, TRAIN_MODEL, fill_torch_home, write_script

from kennel.jobs import list_jobs, load_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script, its metric definitions, and a TORCH_HOME whose resnet18 weights are random (none download)."""
    folder = tmp_path_factory.mktemp("project")
    write_script(folder / "code", TRAIN_MODEL)
    (folder / "metric_definitions.json").write_text(json.dumps(METRIC_DEFINITIONS))
    fill_torch_home(folder / "torch", "resnet18")
    return folder


def _env(project: Path) -> dict[str, str]:
    """This test's environment (its own kennel home) with the project's TORCH_HOME."""
    return {**os.environ, "TORCH_HOME": str(project / "torch")}


def test_a_sagemaker_script_trains_on_real_photos(project: Path):
    folder, env = project, _env(project)
    photos = shared_data("breeds4")
    command = [
        sys.executable, "-m", "kennel", "run", str(folder / "code" / "train_model.py"), "--data", str(photos),
        "--hp", "epochs=1", "--hp", "batch-size=32", "--metric-definitions", str(folder / "metric_definitions.json"),
        "--name", "breeds4", "--no-tracking",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    record = load_job("breeds4")
    assert record.status == "completed" and {"train_loss", "valid_loss", "test_loss"} <= set(record.metrics)
    assert 0.0 <= record.metrics["valid_accuracy"] <= 1.0
    assert (Path(record.artifact) / "model.pth").is_file()
    assert (record.path / "debug" / "rules.json").is_file() and (record.path / "profile.html").is_file()


def test_a_study_of_a_sagemaker_script_on_real_photos(project: Path, tmp_path: Path):
    folder, env = project, _env(project)
    photos = shared_data("breeds4")
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "parameters": {
                    "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                    "batch-size": {"type": "categorical", "choices": [32, 64]},
                }
            }
        )
    )
    command = [
        sys.executable, "-m", "kennel", "tune", "--script", str(folder / "code" / "train_model.py"),
        "--data", str(photos), "--hp", "epochs=1", "--metric-definitions", str(folder / "metric_definitions.json"),
        "--objective", "valid_loss", "--minimize", "--space", str(space), "--trials", "3", "--study", "real",
        "--no-tracking",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    trials = list_jobs(study="real")
    assert len(trials) == 3 and all(t.kind == "script" for t in trials)
    finished = [t for t in trials if t.status == "completed"]
    best = min(finished, key=lambda t: t.metrics["valid_loss"])
    saved = json.loads((Path(os.environ["KENNEL_HOME"]) / "studies" / "real" / "best.json").read_text())
    assert saved["hyperparameters"]["lr"] == best.params["lr"] and saved["value"] == best.metrics["valid_loss"]

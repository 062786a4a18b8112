"""The commands that print help, tables or a report import none of the heavy libraries (PyTorch, timm, MLflow,
pandas, pyarrow, ONNX...): each costs more to import than the command has to do. Run in a fresh interpreter each,
so that nothing this test process imported counts. How long they take is benchmarks/cli.py's to say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kennel.evaluation import EvaluationResult
from kennel.jobs import JobRecord

HEAVY = ("torch", "torchvision", "timm", "mlflow", "pandas", "pyarrow", "onnx", "onnxruntime", "optuna", "sklearn")
HEAVY += ("scipy", "cv2", "pytorch_grad_cam", "fastapi", "uvicorn")

RUN = """
import json, runpy, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["kennel", *args]
try:
    runpy.run_module("kennel", run_name="__main__")
except SystemExit as done:
    code = done.code
else:
    code = 0
print("\\nIMPORTED " + json.dumps({"code": code, "modules": sorted(m for m in heavy if m in sys.modules)}))
"""


def imported(*args: str) -> tuple[object, list[str]]:
    """The exit code of ``kennel ARGS`` and which of :data:`HEAVY` it imported."""
    done = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(args), json.dumps(HEAVY)], capture_output=True, text=True, timeout=120
    )
    line = done.stdout.rsplit("IMPORTED ", 1)[-1]
    result = json.loads(line)
    return result["code"], result["modules"]


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["jobs"], ["models"], ["models", "lite*"]])
def test_help_and_tables_import_nothing_heavy(args: list[str], kennel_home: Path) -> None:
    folder = kennel_home / "jobs" / "20250101-120000-demo-ab12"
    JobRecord(id=folder.name, name="demo", status="completed", job_dir=str(folder)).save()  # a job to list
    assert imported(*args) == (0, [])


def test_a_report_whose_heatmaps_the_job_left_imports_nothing_heavy(tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "20250101-120000-demo-ab12"
    JobRecord(id=folder.name, name="demo", status="completed", job_dir=str(folder)).save()
    photo = tmp_path / "dog.jpg"
    Image.new("RGB", (60, 40), (200, 120, 30)).save(photo)
    mistake = {
        "index": 0,
        "file": str(photo),
        "true": "a",
        "predicted": "b",
        "probability": 0.9,
        "true_probability": 0.1,
    }

    EvaluationResult(["a", "b"], 2, 0.5, 1.0, 0.7, [], np.array([[0, 1], [0, 1]]), [], [mistake]).save(
        folder / "evaluation"
    )
    (folder / "evaluation" / "heatmaps.json").write_text(json.dumps([{**mistake, "looked": "iVBORw0KGgo="}]))
    assert imported("report", str(folder)) == (0, [])
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in (folder / "report.html").read_text()

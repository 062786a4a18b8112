"""What a person reads in the terminal while a study runs: each rule's finding says which trial it is of, and reads
the same with one worker (in the ``kennel tune`` process) as with several (processes of their own), folded to 80
columns (the width where the output is no terminal) between its words."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import space_file

from kennel.lines import INDENT

SPACE = {"parameters": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}}
SETTINGS = {
    "model.backbone": "tiny",
    "model.pretrained": "false",
    "epochs": "1",
    "debug.rules.ClassImbalance.samples": "10",  # judge the few photos of a tiny dataset
}
FINDING = re.compile(r"(debugger|profiler) rule \w+: ")


def unfolded(text: str) -> list[str]:
    """The lines as said, each folded line's continuations (indented, :mod:`kennel.lines`) joined back to it."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(INDENT) and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes, the third with 2 training photos against the others' 24: ClassImbalance fires in every trial."""
    from kennel.data.sample import write_sample_dataset

    root = write_sample_dataset(tmp_path_factory.mktemp("data") / "imbalanced", num_classes=3, per_split=(24, 4, 4))
    for photo in sorted((root / "train" / "003.Synthetic_c").iterdir())[2:]:
        photo.unlink()
    return root


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_every_finding_line_of_a_study_names_its_trial_and_breed(imbalanced: Path, tmp_path: Path, workers: int):
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "kennel", "tune", "--data", str(imbalanced), "--study", f"lines{workers}"]
    command += ["--space", str(space_file(tmp_path / "space.yaml", SPACE)), "--trials", "2", "--parallel", str(workers)]
    # A process of its own, as a person runs it: the CLI sets logging up, and workers write to the terminal's stderr.
    done = subprocess.run([*command, *sets, "--no-tracking"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(len(line) <= 80 for line in done.stderr.splitlines() if FINDING.search(line)), done.stderr
    findings = [line for line in unfolded(done.stderr) if FINDING.search(line)]
    assert findings and all(re.match(r"trial [01]: (debugger|profiler) rule ", line) for line in findings), findings
    imbalance = sorted(line for line in findings if "rule ClassImbalance: " in line)
    assert [line.split(":")[0] for line in imbalance] == ["trial 0", "trial 1"]
    assert all(line.endswith("fewest samples: Synthetic c (2).") for line in imbalance), imbalance

"""Command-line benchmark: what the commands that print tables, help and reports cost, as ratios to a bare
``python -c "import torch"`` measured in the same run.

    python benchmarks/cli.py                   # a small job on generated photos, 5 rounds (about 3 minutes)
    python benchmarks/cli.py --job JOB_DIR     # the report of a job you have (its folder), no training
    python benchmarks/cli.py --rounds 9        # more rounds: steadier medians on a busy machine

Each command runs in its own process, in rounds (one of each per round, so a burst of other work on the machine
touches every command alike); the table gives the median wall time and the median peak memory (the child's
``ru_maxrss``), each also as a ratio to ``import torch``. A command that prints tables or help should cost less
than ``import torch`` alone (a ratio under 1): it has no need of PyTorch. ``kennel report JOB`` is timed twice:
as the job left it (its mistakes' heatmaps made by the job, on the model it had loaded) and with those heatmaps
removed before each run, so the report makes them itself, as for a tuning trial's job (on ONNX Runtime, from the
feature cache's export of the backbone, :mod:`kennel.cams`).

The small job is ``kennel train`` (the default recipe, 2 epochs, no tracking, and no ONNX file in its artifact, as
a tuning trial's) on a generated dataset whose test split has a few photos filed under the wrong class, so that its
report has mistakes to show. Everything runs
inside private temporary KENNEL_HOME and KENNEL_CACHE folders, removed at the end.

This process imports nothing heavy before the table: Linux carries a parent's resident memory at ``fork`` into the
child's ``ru_maxrss``, so a parent that had imported PyTorch would give every command PyTorch's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

KENNEL = [sys.executable, "-m", "kennel"]
BASELINE = "import torch"
HEATMAPS = "heatmaps.json"  # in the job's evaluation/ folder, where a job keeps its mistakes' heatmaps


@dataclass
class Row:
    """One command and what each of its runs cost: wall seconds and peak memory in MiB."""

    name: str
    command: list[str]
    before: str | None = None  # what to remove before each run (a job's stored heatmaps)
    seconds: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    failed: str | None = None


def run_once(row: Row, env: dict[str, str]) -> None:
    """One run of ``row``'s command in a child process, its output discarded: wall time and ``ru_maxrss``."""
    if row.before is not None:
        Path(row.before).unlink(missing_ok=True)
    started = time.perf_counter()
    child = subprocess.Popen(row.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        row.failed = f"exit {child.returncode}: {errors.strip()[-300:]}"
        return
    row.seconds.append(seconds)
    row.peak_mib.append(usage.ru_maxrss / 1024)  # kilobytes on Linux


def in_child(code: str, env: dict[str, str]) -> str:
    """What a Python snippet prints, run in a child process (this one stays small)."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def small_job(folder: Path, env: dict[str, str], model: str | None) -> Path:
    """A short training job on generated photos, two of each test class filed under the next class (mistakes for
    its report); its folder."""
    data = folder / "data"
    write = "from kennel.data.sample import write_sample_dataset as w; w({!r}, 6, (16, 6, 8), size=96)"
    in_child(write.format(str(data)), env)
    classes = sorted(p for p in (data / "test").iterdir() if p.is_dir())
    moves = [  # all chosen before the first move, so that no photo moves twice
        (photo, classes[(index + 1) % len(classes)])
        for index, folder in enumerate(classes)
        for photo in sorted(folder.glob("*.jpg"))[:2]
    ]
    for photo, target in moves:
        photo.rename(target / f"moved_{photo.name}")
    command = [*KENNEL, "train", "--data", str(data), "--epochs", "2", "--no-tracking", "--json"]
    command += ["--set", "export_onnx=false"]  # as a tuning trial's
    if model:
        command += ["--model", model]
    print(f"training the small job: {' '.join(command[2:])} ...", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the small job failed:\n{done.stderr[-2000:]}")
    return Path(json.loads(done.stdout.strip().splitlines()[-1])["job_dir"])


def rows_for(job: Path) -> list[Row]:
    return [
        Row(BASELINE, [sys.executable, "-c", "import torch"]),
        Row("python -c pass", [sys.executable, "-c", "pass"]),  # the floor: the interpreter alone
        Row("kennel --help", [*KENNEL, "--help"]),
        Row("kennel train --help", [*KENNEL, "train", "--help"]),
        Row("kennel jobs", [*KENNEL, "jobs"]),
        Row("kennel models", [*KENNEL, "models"]),
        Row("kennel report JOB", [*KENNEL, "report", str(job)]),
        Row(
            "kennel report JOB (heatmaps made now)",
            [*KENNEL, "report", str(job)],
            before=str(job / "evaluation" / HEATMAPS),
        ),
    ]


def table(rows: list[Row], rounds: int):
    from rich.table import Table

    base = next(row for row in rows if row.name == BASELINE)
    base_s, base_mib = statistics.median(base.seconds), statistics.median(base.peak_mib)
    result = Table(title=f"median of {rounds} rounds; ratios to a bare python -c 'import torch' of the same run")
    for heading in ("command", "wall s", "x torch", "peak MiB", "x torch "):
        result.add_column(heading, justify="left" if heading == "command" else "right", no_wrap=heading == "command")
    for row in rows:
        if row.failed or not row.seconds:
            result.add_row(row.name, "failed", "", "", row.failed or "")
            continue
        seconds, mib = statistics.median(row.seconds), statistics.median(row.peak_mib)
        result.add_row(row.name, f"{seconds:.2f}", f"{seconds / base_s:.2f}", f"{mib:.0f}", f"{mib / base_mib:.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, help="report this job's folder instead of training a small one")
    parser.add_argument("--model", help="the small job's backbone (default: the default recipe's)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command, interleaved; the median counts")
    args = parser.parse_args()

    cpu = in_child("from kennel.inference.machine import describe_cpu; print(describe_cpu())", dict(os.environ))
    print(f"kennel command-line benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"CPU: {cpu.strip()}")
    load_before = os.getloadavg()
    print(f"load average at start (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in load_before)}")
    with tempfile.TemporaryDirectory(prefix="kennel-bench-cli-") as private:
        private = Path(private)
        env = {**os.environ, "KENNEL_HOME": str(private / "home"), "KENNEL_CACHE": str(private / "cache")}
        job = args.job.resolve() if args.job else small_job(private, env, args.model)
        if args.job:  # its heatmaps are removed by one row: that row works on a copy
            job = Path(shutil.copytree(job, private / "home" / "jobs" / job.name))
        rows = rows_for(job)
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds} ...", flush=True)
            for row in rows:
                run_once(row, env)
        from rich.console import Console

        Console().print(table(rows, args.rounds))
    load_after = os.getloadavg()
    print(f"load average at end (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in load_after)}")
    if max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1):
        print("note: other work shared the CPU during this run; ratios are noisier than on a quiet machine")


if __name__ == "__main__":
    main()

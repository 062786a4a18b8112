"""``kennel train --processes N`` / ``--gpus N``: the same command again under torchrun, one process per GPU (or
N CPU processes), on this machine. Across machines, run torchrun yourself with its rendezvous options.

torchrun takes any exit status but 0 for a failed rank, so when a rule stopped the job rank 0 still exits 0; it
names the job in the file :data:`JOB_FILE` points to, and the launcher reads the job's record from there and
exits as one process would have (3 for a rule's stop)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kennel.processes import available_cores

LAUNCH_OPTIONS = ("--processes", "--gpus")
JOB_FILE = "KENNEL_LAUNCHED_JOB_FILE"  # environment: where rank 0 writes its job's folder for the launcher


def without_options(argv: Sequence[str], names: Sequence[str] = LAUNCH_OPTIONS) -> list[str]:
    """``argv`` less ``--name VALUE`` and ``--name=VALUE`` for each of ``names``: the per-process command."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(f"{name}=") for name in names):
            kept.append(arg)
    return kept


def torchrun_command(argv: Sequence[str], processes: int) -> list[str]:
    """torchrun on this machine alone (``--standalone`` picks a free rendezvous port) running ``kennel ARGV``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "kennel",
        *argv,
    ]


def process_env(processes: int, cuda: bool, job_file: Path | None = None) -> dict[str, str]:
    """Each CPU process gets its share of the cores (torchrun's default is one thread each); a GPU process
    keeps a few threads for decoding and its Python loop. ``job_file``: where rank 0 names its job."""
    env = dict(os.environ)
    if job_file is not None:
        env[JOB_FILE] = str(job_file)
    if "OMP_NUM_THREADS" not in env:
        share = max(1, available_cores() // processes)
        env["OMP_NUM_THREADS"] = str(min(share, 4) if cuda else share)
    return env


def tell_launcher(job_dir: Path | str) -> bool:
    """Rank 0 names its job to the ``kennel train --processes`` that launched it; False when no kennel launcher
    started this process (torchrun run by hand, or no torchrun)."""
    path = os.environ.get(JOB_FILE)
    if not path:
        return False
    Path(path).write_text(str(job_dir))
    return True


def launched_job(job_file: Path) -> Path | None:
    """The folder of the job rank 0 named in ``job_file``; None when it named none (it failed before the job
    existed, or ended another way)."""
    try:
        return Path(job_file.read_text())
    except FileNotFoundError:
        return None

"""``kennel train --processes N`` / ``--gpus N``: the same command again under torchrun, one process per GPU (or
N CPU processes), on this machine. Across machines, run torchrun yourself with its rendezvous options."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from kennel.data.dataset import available_cores

LAUNCH_OPTIONS = ("--processes", "--gpus")


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


def process_env(processes: int, cuda: bool) -> dict[str, str]:
    """Each CPU process gets its share of the cores (torchrun's default is one thread each); a GPU process
    keeps a few threads for decoding and its Python loop."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        share = max(1, available_cores() // processes)
        env["OMP_NUM_THREADS"] = str(min(share, 4) if cuda else share)
    return env

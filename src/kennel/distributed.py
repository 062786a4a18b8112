"""Data-parallel training under ``torchrun``: which process this is, and the few collectives a job needs.

``torchrun --nproc-per-node N -m kennel train ...`` (or ``kennel train --processes N``, which runs torchrun)
starts N copies of the same job. Each reads its place from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), joins one process group (NCCL on CUDA, gloo on CPU), trains on its shard of every epoch, and
averages gradients through DistributedDataParallel. Rank 0 alone writes the job's record, metrics, checkpoints
and artifact; the other ranks only train. Without torchrun a job is rank 0 of 1 and nothing here talks to
anyone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sized
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class Ranks:
    """This process's place among the job's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the job's files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()
_joined = False  # whether start() created the process group, so stop() only ends a group kennel began
_left = False  # whether this process left a group it joined: it ends without finalizing (see end_process)


def from_environment() -> Ranks:
    """The ranks torchrun announced in the environment; rank 0 of 1 without torchrun."""
    try:
        return Ranks(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {exc}") from None


class RankStopped(KeyboardInterrupt):
    """torchrun stopped this process (SIGTERM): another rank failed, or the job was interrupted."""


def _stopped_by_torchrun(signum: int, frame: object) -> None:
    raise RankStopped("torchrun stopped this process: another rank failed or the job was interrupted")


def start(device: torch.device) -> Ranks:
    """Join the job's process group when torchrun started several processes; returns this process's ranks."""
    ranks = from_environment()
    if not ranks.distributed or dist.is_initialized():
        return ranks
    if threading.current_thread() is threading.main_thread():
        # torchrun ends the other ranks with SIGTERM when one fails: end like Ctrl-C, so the job says so.
        signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    global _joined
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _joined = True
    return ranks


def stop() -> None:
    """Leave the process group :func:`start` joined; a group the caller made is the caller's to end."""
    global _joined, _left
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
        _left = True
    _joined = False


def left_group() -> bool:
    """Whether this process was one of a job's ranks and has left its process group."""
    return _left


def end_process(code: int) -> None:
    """End a rank's process with ``code`` once its job is written, without finalizing the interpreter.

    Threads still run native code when a rank is done: gloo's workers outlive ``destroy_process_group`` (DDP's
    reducer keeps the process group), and so may a library's. If the interpreter finalizes meanwhile, CPython
    ends such a thread with ``pthread_exit`` as it takes the GIL back, and unwinding it through C++ frames that
    may not throw calls ``std::terminate``: the rank dies of SIGABRT ("terminate called without an active
    exception") and torchrun fails the job that had completed. Nothing is left for finalization to do: the
    record, the model and the tracking run are written by then, so the rank flushes its streams and leaves."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            stream.flush()
    os._exit(code)


def process_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per process: local rank N uses ``cuda:N``."""
    if device.type == "cuda" and ranks.distributed:
        return torch.device("cuda", ranks.local_rank)
    return device


def _collective_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_text(text: str, ranks: Ranks) -> str:
    """Rank 0's ``text`` on every rank (a job id: rank 0 creates the job, the others learn its name)."""
    if not ranks.distributed:
        return text
    device = _collective_device()
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    if not ranks.is_main:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode()


def summed(values: list[float], ranks: Ranks) -> list[float]:
    """Each of ``values`` summed over the ranks (all ranks must call this together)."""
    if not ranks.distributed:
        return values
    totals = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(totals)
    return totals.tolist()


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether ``flag`` holds on any rank (all ranks must call this together)."""
    return summed([float(flag)], ranks)[0] > 0


def gather_rows(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's rows of ``tensor`` (equal trailing shape, any number of rows), concatenated rank by rank."""
    if not ranks.distributed:
        return tensor
    device = _collective_device()
    local = tensor.to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, torch.tensor([len(local)], dtype=torch.int64, device=device))
    longest = int(max(s.item() for s in sizes))
    # all_gather moves equal shapes only: pad every rank's rows to the longest, then cut each back.
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(ranks.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n.item())] for part, n in zip(parts, sizes, strict=True)]).to(tensor.device)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def per_rank_batch(batch_size: int, ranks: Ranks) -> int:
    """Each process's share of the global batch; the global batch must split evenly."""
    if batch_size % ranks.world_size:
        raise ValueError(
            f"data.batch_size {batch_size} is the global batch, split over {ranks.world_size} processes: "
            f"it must be a multiple of {ranks.world_size}"
        )
    return batch_size // ranks.world_size


def train_sampler(dataset: Sized, ranks: Ranks, seed: int) -> DistributedSampler:
    """This rank's shard of each epoch's shuffle. One process uses it too: the shuffle of epoch E is then the
    same permutation for any number of processes, and each step's global batch holds the same photos."""
    return DistributedSampler(dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True, seed=seed)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order and without padding: evaluation sees each photo
    exactly once across the ranks (DistributedSampler would repeat some to even out the shards)."""

    def __init__(self, size: int, ranks: Ranks) -> None:
        self.indices = range(ranks.rank, size, ranks.world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

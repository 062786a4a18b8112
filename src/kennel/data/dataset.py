"""Datasets and loaders over a dataset layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kennel.data.images import open_rgb
from kennel.data.layout import Split
from kennel.processes import available_cores


class ImageDataset(Dataset):
    """``(transform(image), label)`` for each file of a split."""

    def __init__(self, files: list[tuple[Path, int]] | Split, transform: Callable, draft_size: int | None = None):
        self.files = list(files.files if isinstance(files, Split) else files)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        return self.transform(open_rgb(path, self.draft_size)), label


def default_workers() -> int:
    """Loader workers for this process: its share of the machine's cores (torchrun's ``LOCAL_WORLD_SIZE``
    processes share them) less two for compute, at most 8.

    On a 2-core CPU a worker process only competes with the forward pass's threads (measured: 101 photos/s
    with one worker, 120 with none, for lite0 feature extraction); from 3 cores up, decoding in parallel pays.
    """
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(0, min(8, available_cores() // processes - 2))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int | None = None,
    pin_memory: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A loader over ``dataset``; a ``sampler`` (a rank's shard, see :mod:`kennel.distributed`) replaces the
    seeded shuffle. Workers persist across epochs: starting them again each epoch would leave a GPU idle."""
    workers = default_workers() if workers is None else workers
    generator = torch.Generator().manual_seed(seed)
    size = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        generator=generator,
        drop_last=drop_last and size > batch_size,
    )

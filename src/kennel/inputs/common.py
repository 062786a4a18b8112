"""What every way of feeding the loop gives it (:class:`TrainingInputs`), and what the two cached ways share: a
split's tensors from the feature cache, and their loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kennel.config import TrainConfig
from kennel.data.layout import DatasetLayout
from kennel.distributed import Ranks, ShardSampler, per_rank_batch, train_sampler
from kennel.extraction import key_precision
from kennel.features import Features, cached_features, feature_key
from kennel.inference import Engine
from kennel.inference.graph import Calibration
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)


@dataclass
class TrainingInputs:
    module: nn.Module  # what the loop runs and the optimizer updates: the head, the last stages, or the classifier
    train: DataLoader
    valid: DataLoader
    test_logits: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # (logits, targets) over the test split
    cached: bool  # trained on cached features
    feature_seconds: float = 0.0
    engine: dict[str, Any] = field(default_factory=dict)  # what ran the frozen forward passes, and how fast
    # Valid top-1 of the trained head on fp32 and int8 features, where the features are int8.
    precision_accuracy: Callable[[], dict[str, float]] | None = None
    int8_calibration: Calibration | None = None  # for the artifact's int8 model, where the features are int8
    # (features, labels) of a split, where the loop trains on cached features: what a second head is fitted on.
    split_features: Callable[[str], tuple[torch.Tensor, torch.Tensor]] | None = None
    # PyTorch threads for the loop and the heads fitted on these inputs (None: the job's). A head on cached features
    # is small tensor operations, which a second thread only makes wait for it at each one: on the 2-core EPYC one
    # thread ran an epoch 6x and the logistic head 4.6x faster while other processes kept the cores busy.
    threads: int | None = None


@dataclass
class SplitCache:
    """A job's splits in the feature cache, as one frozen module (``name``: a backbone, or its frozen stages)
    gives them: each split keyed by its fingerprint, the train split with the job's augmented views."""

    layout: DatasetLayout
    config: TrainConfig
    name: str
    weights_id: str
    preprocessing: Preprocessing
    what: str  # for the log: "features", "stage inputs"
    stored: torch.dtype = torch.float32
    computed: list[str] = field(default_factory=list)  # the splits not found in the cache

    def get(self, split: str, fingerprint: str, engine: Engine) -> Features:
        views = self.config.feature_views if split == "train" else 1
        key = feature_key(
            split,
            fingerprint,
            self.name,
            self.weights_id,
            self.preprocessing,
            key_precision(engine),
            views,
            self.config.data.augment,
            self.config.seed,
        )
        tensors, was_cached = cached_features(
            lambda: engine, self.layout[split], key, self.preprocessing, stored=self.stored
        )
        shape = tuple(tensors.features.shape)
        log.info("%s %s: %s (%s)", split, self.what, shape, "cached" if was_cached else "computed")
        if not was_cached:
            self.computed.append(split)
        return tensors


def cache_loader(dataset: Dataset, config: TrainConfig, ranks: Ranks, shuffle: bool, drop_last: bool = False):
    """This rank's loader over cached rows: the train split shuffled by the job's seed, the others sharded."""
    sampler = train_sampler(dataset, ranks, config.seed) if shuffle else ShardSampler(len(dataset), ranks)
    batch = per_rank_batch(config.data.batch_size, ranks)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=drop_last)

"""What the loop trains on: cached backbone features and the head (frozen backbone), or photos and the model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kennel.config import TrainConfig
from kennel.data.dataset import ImageDataset, make_loader
from kennel.data.layout import DatasetLayout
from kennel.distributed import SINGLE, Ranks, ShardSampler, per_rank_batch, train_sampler
from kennel.features import FeatureKey, cached_features, extraction_dtype, split_fingerprint
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)


@dataclass
class TrainingInputs:
    module: nn.Module  # what the optimizer updates: the head alone, or the whole classifier
    train: DataLoader
    valid: DataLoader
    test_logits: Callable[[], tuple[torch.Tensor, torch.Tensor]]  # (logits, targets) over the test split
    cached: bool  # trained on cached features
    feature_seconds: float = 0.0


def _feature_inputs(
    model: Classifier,
    layout: DatasetLayout,
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    weights_id: str,
    ranks: Ranks,
) -> TrainingInputs:
    import time

    dtype = extraction_dtype(device, config.amp)
    started = time.perf_counter()
    tensors = {}
    for split in ("train", "valid", "test"):
        train_views = split == "train" and config.feature_views > 1
        key = FeatureKey(
            split=split,
            fingerprint=split_fingerprint(layout[split]),
            backbone=model.backbone,
            weights=weights_id,
            preprocessing=preprocessing.to_dict(),
            augment=config.data.augment if train_views else "none",
            views=config.feature_views if split == "train" else 1,
            seed=config.seed,
            dtype=str(dtype).removeprefix("torch."),
        )
        feats, was_cached = cached_features(
            model.features, layout[split], key, preprocessing, device, workers=config.data.workers
        )
        log.info("%s features: %s (%s)", split, tuple(feats.features.shape), "cached" if was_cached else "computed")
        tensors[split] = feats
    seconds = time.perf_counter() - started
    batch = per_rank_batch(config.data.batch_size, ranks)

    def loader(split: str, shuffle: bool) -> DataLoader:
        dataset = TensorDataset(tensors[split].features, tensors[split].labels)
        sampler = train_sampler(dataset, ranks, config.seed) if shuffle else ShardSampler(len(dataset), ranks)
        return DataLoader(dataset, batch_size=batch, sampler=sampler)

    head = model.head

    def test_logits() -> tuple[torch.Tensor, torch.Tensor]:
        head.eval()
        with torch.no_grad():
            logits = head(tensors["test"].features.to(device)).float().cpu()
        return logits, tensors["test"].labels

    return TrainingInputs(head, loader("train", True), loader("valid", False), test_logits, True, seconds)


def _image_inputs(
    model: Classifier,
    layout: DatasetLayout,
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    ranks: Ranks,
) -> TrainingInputs:
    pin = device.type == "cuda"
    draft = preprocessing.resize_size
    workers = config.data.workers
    batch = per_rank_batch(config.data.batch_size, ranks)

    def loader(split: str, transform, shuffle: bool, shard: Ranks = ranks) -> DataLoader:
        dataset = ImageDataset(layout[split], transform, draft_size=draft)
        sampler = train_sampler(dataset, shard, config.seed) if shuffle else ShardSampler(len(dataset), shard)
        return make_loader(dataset, batch, shuffle, workers, pin, config.seed, drop_last=shuffle, sampler=sampler)

    def test_logits() -> tuple[torch.Tensor, torch.Tensor]:
        from kennel.engine import evaluate

        # Rank 0 alone evaluates the test split, in file order, after training.
        test = loader("test", preprocessing.eval_transform(), False, shard=SINGLE)
        result = evaluate(model, test, device, amp=config.amp)
        return result["logits"], result["targets"]

    train = loader("train", preprocessing.train_transform(config.data.augment), True)
    return TrainingInputs(model, train, loader("valid", preprocessing.eval_transform(), False), test_logits, False)


def prepare_inputs(
    model: Classifier,
    layout: DatasetLayout,
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    weights_id: str,
    ranks: Ranks = SINGLE,
) -> TrainingInputs:
    """Loaders for this rank's shard (each step takes ``batch_size / world_size`` photos per rank)."""
    if model.backbone_frozen and config.feature_cache:
        return _feature_inputs(model, layout, config, preprocessing, device, weights_id, ranks)
    return _image_inputs(model, layout, config, preprocessing, device, ranks)

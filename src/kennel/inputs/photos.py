"""Photos: the whole model trained on decoded, augmented photos; and the test evaluation of a trained model on
the test split's photos, which every path but the feature cache's uses."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from kennel.config import TrainConfig
from kennel.data.dataset import ImageDataset, make_loader
from kennel.data.layout import DatasetLayout
from kennel.distributed import Ranks, ShardSampler, per_rank_batch, train_sampler
from kennel.inference import FrozenGraph, open_engine
from kennel.inference.graph import architecture
from kennel.inputs.common import TrainingInputs
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing


def photo_test_logits(
    model: Classifier,
    layout: DatasetLayout,
    preprocessing: Preprocessing,
    device: torch.device,
    batch: int,
    amp: bool,
    engines: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` of the trained ``model`` over the test split's photos, in file order, on the fastest
    PyTorch backend (the trained weights are new: an ONNX export for one pass would cost more than it saves);
    what ran is kept in ``engines["test"]``."""
    graph = FrozenGraph(
        module=lambda: model,
        outputs=("logits",),
        input_size=preprocessing.input_size,
        architecture=architecture(model.backbone, preprocessing.input_size),
        identity="",
        exportable=False,
    )
    precision = "auto" if device.type == "cuda" and amp else "fp32"
    engine = open_engine(graph, device, "torch", precision)
    test = ImageDataset(layout["test"], preprocessing.eval_transform(), draft_size=preprocessing.resize_size)
    (logits,) = engine.run_dataset(test, batch, description="test split")
    engines["test"] = engine.summary()
    return logits, torch.tensor([label for _, label in layout["test"].files])


def photo_inputs(
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

    engines: dict[str, Any] = {}

    def test_logits() -> tuple[torch.Tensor, torch.Tensor]:
        # Rank 0 alone evaluates the test split, after training.
        return photo_test_logits(model, layout, preprocessing, device, batch, config.amp, engines)

    train = loader("train", preprocessing.train_transform(config.data.augment), True)
    valid = loader("valid", preprocessing.eval_transform(), False)
    return TrainingInputs(model, train, valid, test_logits, False, engine=engines)

"""A partly frozen backbone (``model.freeze N`` with ``stage_cache``): the frozen stages' output computed once per
photo and view, and the stages after them fine-tuned with the head on it.

Fine-tuning the last stages on photos runs the whole backbone forward for every photo in every epoch, though the
frozen stages give the same output for the same view each time; on a CPU most of an epoch is that forward pass.
Cached, an epoch costs only the trainable stages. What it gives up is a fresh augmentation each epoch: the train
split has ``feature_views`` views per photo (the first the plain eval view), fixed by the seed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kennel.config import TrainConfig
from kennel.data.fingerprint import split_fingerprint
from kennel.data.layout import DatasetLayout
from kennel.distributed import Ranks, per_rank_batch
from kennel.features import Features
from kennel.inference import FrozenGraph, open_engine
from kennel.inference.graph import architecture
from kennel.inputs.common import SplitCache, TrainingInputs, cache_loader
from kennel.inputs.photos import photo_test_logits
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)

# The cached activations are kept at half precision: half the memory and disk of fp32 (lite0's input of its last
# two stages is 192 x 7 x 7 values a photo), and far finer than the differences training responds to.
STORED = torch.float16


class StageInputs(Dataset):
    """``(stage input, label)`` rows of cached activations, back at fp32 for the trainable stages."""

    def __init__(self, cached: Features) -> None:
        self.inputs, self.labels = cached.features, cached.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index].float(), self.labels[index]


def stage_name(model: Classifier) -> str:
    """What the frozen part is called in the cache and in the engine's figures: the backbone up to a stage."""
    return f"{model.backbone}-to-stage{model.frozen_stages}"


def stage_inputs(
    model: Classifier,
    layout: DatasetLayout,
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    weights_id: str,
    ranks: Ranks,
) -> TrainingInputs:
    started = time.perf_counter()
    frozen, name, size = model.frozen_part(), stage_name(model), preprocessing.input_size
    graph = FrozenGraph(
        module=lambda: frozen,
        outputs=("stage_input",),
        input_size=size,
        architecture=architecture(name, size),
        identity=f"{name}@{size}:stage-input:{weights_id}",
    )
    engine = open_engine(graph, device, config.engine.backend, config.engine.precision)
    cache = SplitCache(layout, config, name, weights_id, preprocessing, "stage inputs", stored=STORED)
    tensors = {split: cache.get(split, split_fingerprint(layout[split]), engine) for split in ("train", "valid")}

    def loader(split: str, shuffle: bool) -> DataLoader:
        # As on photos, the train split drops its last partial batch: the trainable stages' BatchNorm layers
        # would take their statistics from a handful of rows.
        return cache_loader(StageInputs(tensors[split]), config, ranks, shuffle, drop_last=shuffle)

    # Under its own name: the jobs console says "frozen stages: onnxruntime fp32, 180 photos/s".
    engines: dict[str, Any] = {
        "frozen stages": {**engine.summary(), "cached": not cache.computed, "frozen_stages": model.frozen_stages}
    }

    def test_logits() -> tuple[torch.Tensor, torch.Tensor]:
        # The test split runs through the whole model on its photos, as the endpoint will run it.
        batch = per_rank_batch(config.data.batch_size, ranks)
        return photo_test_logits(model, layout, preprocessing, device, batch, config.amp, engines)

    return TrainingInputs(
        model.trainable_part(),
        loader("train", True),
        loader("valid", False),
        test_logits,
        False,
        time.perf_counter() - started,
        engines,
    )

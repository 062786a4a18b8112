"""What the loop trains on, by how much of the backbone is frozen:

- all of it (the default): its features, computed once and cached, and the head (:mod:`.cached_features`);
- its first stages, with ``stage_cache``: those stages' output, computed once and cached, and the stages after
  them with the head (:mod:`.stages`);
- otherwise: photos, and the whole model (:mod:`.photos`).
"""

from __future__ import annotations

import torch

from kennel.config import TrainConfig
from kennel.data.layout import DatasetLayout
from kennel.distributed import SINGLE, Ranks
from kennel.inputs.cached_features import feature_inputs
from kennel.inputs.common import TrainingInputs
from kennel.inputs.photos import photo_inputs
from kennel.inputs.stages import stage_inputs
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing


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
    cached = feature_inputs if model.backbone_frozen and config.feature_cache else None
    if cached is None and config.stage_cache and model.frozen_stages:
        cached = stage_inputs
    if cached is None:
        return photo_inputs(model, layout, config, preprocessing, device, ranks)
    # Whatever computing the cache draws from torch's generator (a probe's init, augmented views), the job's own
    # stream is left where it was: a job trains the same on a cold cache as on a warm one.
    with torch.random.fork_rng(devices=[]):
        return cached(model, layout, config, preprocessing, device, weights_id, ranks)


__all__ = ["TrainingInputs", "prepare_inputs"]

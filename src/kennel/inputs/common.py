"""What every way of feeding the loop gives it: :class:`TrainingInputs`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from kennel.inference.graph import Calibration


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

"""What the engine runs: a frozen forward pass from an image batch to named outputs, and where its weights and
ready-made ONNX files come from."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

# Batches of preprocessed photos ([N, 3, S, S] float32) that int8 calibration runs the fp32 model on.
Calibration = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class FrozenGraph:
    """A module that never changes while the engine runs it: ``module()(image)`` returns one tensor per name in
    ``outputs``.

    ``architecture`` keys the speed measurements (every job with this backbone at this size runs at the same
    speed); ``identity`` keys the ONNX exports (the architecture and its weights). ``onnx_files`` are exports that
    exist already (a model artifact's), by precision; others are built in the cache. ``calibration`` feeds int8
    quantization and ``calibration_id`` names its photos, so another calibration is another int8 file.
    """

    module: Callable[[], nn.Module] = field(repr=False)
    outputs: tuple[str, ...]
    input_size: int
    architecture: str
    identity: str
    onnx_files: dict[str, Path] = field(default_factory=dict)
    calibration: Calibration | None = field(default=None, repr=False)
    calibration_id: str | None = None
    exportable: bool = True  # False: only PyTorch runs it (a module no ONNX file is kept for)


class _Outputs(nn.Module):
    """``features`` then each head over them: one forward returns every output, in order."""

    def __init__(self, features: nn.Module, heads: list[nn.Module | None]) -> None:
        super().__init__()
        self.features = features
        self.heads = nn.ModuleList([head if head is not None else nn.Identity() for head in heads])

    def forward(self, image):
        features = self.features(image)
        outputs = tuple(head(features) for head in self.heads)
        return outputs if len(outputs) > 1 else outputs[0]


def architecture(backbone: str, input_size: int) -> str:
    """What a forward pass's speed depends on: the backbone at its input size. The head is one small matrix, so
    a backbone alone, a job's trained model and its served artifact share one set of figures."""
    return f"{backbone}@{input_size}"


def features_graph(
    features: nn.Module, backbone: str, weights_id: str, input_size: int, calibration=None, calibration_id=None
) -> FrozenGraph:
    """The frozen backbone alone, for the feature cache: ``image -> features``."""
    module = _Outputs(features, [None]).eval()
    return FrozenGraph(
        module=lambda: module,
        outputs=("features",),
        input_size=input_size,
        architecture=architecture(backbone, input_size),
        identity=f"{backbone}@{input_size}:features:{weights_id}",
        calibration=calibration,
        calibration_id=calibration_id,
    )


def classifier_graph(
    build: Callable[[], nn.Module],
    backbone: str,
    input_size: int,
    has_imagenet_head: bool,
    identity: str,
    onnx_files: dict[str, Path] | None = None,
) -> FrozenGraph:
    """A whole :class:`~kennel.models.Classifier`: ``image -> logits`` (and ``imagenet_logits`` where it keeps its
    ImageNet head, for the dog verdict). ``build`` makes the model only when a PyTorch backend needs it: a model
    artifact served through ONNX Runtime never builds it."""
    built: list[nn.Module] = []

    def module() -> nn.Module:
        if not built:
            built.append(classifier_outputs(build()))
        return built[0]

    return FrozenGraph(
        module=module,
        outputs=("logits", "imagenet_logits") if has_imagenet_head else ("logits",),
        input_size=input_size,
        architecture=architecture(backbone, input_size),
        identity=identity,
        onnx_files=dict(onnx_files or {}),
        exportable=False,
    )


def classifier_outputs(classifier) -> nn.Module:
    """The forward a model artifact's ONNX file holds: the breed logits, then the ImageNet logits if any."""
    heads = [classifier.head] + ([classifier.imagenet_head] if classifier.imagenet_head is not None else [])
    return _Outputs(classifier.features, heads).eval()

"""Backbones, their weights and the classifier built on them. The registry and where weights are offline import
no PyTorch (``kennel models`` lists them at once); :class:`Classifier` and building a model do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.models.backbones import BACKBONES, BackboneSpec, member_names, register_backbone
from kennel.models.weights import WeightsSource, WeightsUnavailable, available_offline, load_pretrained

if TYPE_CHECKING:
    from kennel.models.classifier import Classifier


def __getattr__(name: str) -> Any:
    if name == "Classifier":
        from kennel.models.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'kennel.models' has no attribute {name!r}")


def get_backbone(name: str) -> BackboneSpec:
    """A registered backbone, or the fusion of several (``a+b+c``); a KeyError names what is unknown."""
    names = member_names(name)
    if len(names) == 1:
        return BACKBONES.get(name)
    from kennel.models.fusion import fused_spec

    return fused_spec([BACKBONES.get(member) for member in names])


def list_models(pattern: str = "*") -> list[str]:
    return BACKBONES.names(pattern)


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    weights: Path | str | None = None,
    dropout: float = 0.0,
    freeze: int | str = 0,
) -> Classifier:
    """Build backbone ``name`` with ImageNet weights (unless ``pretrained`` is false) and a new head."""
    from kennel.models.classifier import Classifier

    spec = get_backbone(name)
    full = spec.build()
    if pretrained or weights is not None:
        load_pretrained(spec, full, weights)
    parts = spec.split(full)
    model = Classifier(
        name,
        parts.features,
        parts.feature_dim,
        parts.stages,
        num_classes,
        dropout,
        parts.imagenet_head,
        blocks=parts.blocks,
        pool=parts.pool,
    )
    model.freeze(freeze)
    return model


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Classifier",
    "WeightsSource",
    "WeightsUnavailable",
    "available_offline",
    "create_model",
    "get_backbone",
    "list_models",
    "member_names",
    "register_backbone",
]

"""One fine-tuning surface for every backbone: a feature extractor, a new head, and freezing by stage."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class FlipAveraged(nn.Module):
    """Test-time augmentation inside the model: the features of a photo and of its mirror image, averaged. Being
    part of the module, it runs the same in the feature cache, the loop, the test evaluation, the ONNX export and
    the endpoint."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.inner(x) + self.inner(torch.flip(x, dims=(-1,))))


class Standardise(nn.Module):
    """A fused backbone's blocks brought to one scale: each feature centred and each block (one member's features)
    divided by its spread, relative to the blocks' mean spread, by statistics of the training split's features
    (:meth:`fit`); until then it passes features through. No member's features dominate the head for their scale,
    and the whole keeps one backbone's scale, so a head's learning rate means the same on fused features.
    (Each feature to unit variance was measured worse: it amplifies the many near-constant features.)"""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.widths = list(widths)
        dim = sum(widths)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> None:
        features = features.float()
        mean = features.mean(0)
        spreads = torch.stack([block.std() for block in (features - mean).split(self.widths, dim=1)]).clamp_min(1e-6)
        relative = spreads / spreads.mean()
        self.mean.copy_(mean)
        self.std.copy_(torch.cat([r.expand(w) for r, w in zip(relative, self.widths, strict=True)]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class CropsAveraged(nn.Module):
    """Multi-crop test-time augmentation inside the model: the features of the whole input and of its four
    corners at ``scale`` of its side, each resized back to the input size, averaged (five forward passes)."""

    def __init__(self, inner: nn.Module, scale: float = 0.875) -> None:
        super().__init__()
        self.inner = inner
        self.scale = scale

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-1]
        side, far = round(size * self.scale), size - round(size * self.scale)
        corners = [x[..., top : top + side, left : left + side] for top in (0, far) for left in (0, far)]
        resized = [
            nn.functional.interpolate(c, size=(size, size), mode="bilinear", align_corners=False) for c in corners
        ]
        return [x, *resized]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.inner(view) for view in self.views(x)]).mean(0)


# Test-time augmentations by name: each wraps the feature extractor. "none" leaves it as it is.
TTA = {"none": None, "flip": FlipAveraged, "crops": CropsAveraged}


class StageTail(nn.Module):
    """A partly frozen classifier from the input of its first trainable stage: those stages, the pooling after
    the last one, and the head."""

    def __init__(self, stages: list[nn.Module], pool: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.head = head

    def forward(self, stage_input: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(stage_input)))


class Classifier(nn.Module):
    """``head(features(x))``. ``stages`` are the backbone's blocks from input to output, for freezing.

    The backbone's ImageNet head is kept (frozen, outside ``forward``) so a model can still say what
    ImageNet class a photo looks like, e.g. whether it shows a dog at all.
    """

    def __init__(
        self,
        backbone: str,
        features: nn.Module,
        feature_dim: int,
        stages: list[nn.Module],
        num_classes: int,
        dropout: float = 0.0,
        imagenet_head: nn.Module | None = None,
        blocks: list[int] | None = None,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features
        self.feature_dim = feature_dim
        # The widths of a fused backbone's blocks, which the head brings to one scale; None for one backbone.
        self.blocks = blocks
        self.head = self._new_head(num_classes, dropout)
        self.imagenet_head = imagenet_head
        if imagenet_head is not None:
            imagenet_head.requires_grad_(False)
        # Plain list and attribute: the stages and the pooling are already registered under ``features``.
        self._stages = stages
        self._pool = pool
        self.frozen_stages = 0
        self.tta = "none"

    def use_tta(self, name: str) -> Classifier:
        """Average the features over the views of test-time augmentation ``name`` (a key of :data:`TTA`). The
        weights' names move under the wrapper (``features.inner.``), so an artifact says which it used."""
        if name not in TTA:
            raise ValueError(f"unknown test-time augmentation {name!r}; known: {', '.join(TTA)}")
        if TTA[name] is not None and self.tta == "none":
            self.features = TTA[name](self.features)
            self.tta = name
        return self

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    @property
    def num_stages(self) -> int:
        return len(self._stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_imagenet(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet_head is None:
            raise RuntimeError(f"{self.backbone} has no ImageNet head")
        return self.imagenet_head(self.features(x))

    def _new_head(self, num_classes: int, dropout: float) -> nn.Sequential:
        layers = [nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes)]
        return nn.Sequential(*([Standardise(self.blocks)] if self.blocks else []), *layers)

    def fit_standardisation(self, train_features: torch.Tensor) -> None:
        """Set the head's standardisation (where it has one) from the training split's features."""
        if self.blocks:
            self.head[0].fit(train_features)

    def reset_head(self, num_classes: int, dropout: float = 0.0) -> None:
        self.head = self._new_head(num_classes, dropout)

    def freeze(self, stages: int | str) -> None:
        """Freeze the first ``stages`` backbone stages, all but the last ``-stages`` where it is negative (the
        same stages of any backbone: its last ones), or the whole backbone with ``"all"``; 0 trains all."""
        count = self.num_stages if stages == "all" else int(stages)
        if count < 0:
            count += self.num_stages
        if not 0 <= count <= self.num_stages:
            raise ValueError(f"{self.backbone} has {self.num_stages} stages; cannot freeze {stages}")
        self.features.requires_grad_(True)
        frozen = self.features if count == self.num_stages else nn.ModuleList(self._stages[:count])
        frozen.requires_grad_(False)
        self.frozen_stages = count
        self.train(self.training)

    def frozen_part(self) -> nn.Sequential:
        """The frozen stages, from the input: ``image -> the input of the first trainable stage``."""
        self._check_runs_by_stage()
        return nn.Sequential(*self._stages[: self.frozen_stages]).eval()

    def trainable_part(self) -> StageTail:
        """The rest, from the input of the first trainable stage to the logits; it shares its modules with this
        classifier, so training it trains the classifier."""
        self._check_runs_by_stage()
        return StageTail(self._stages[self.frozen_stages :], self._pool, self.head)

    def _check_runs_by_stage(self) -> None:
        if self._pool is None:
            raise ValueError(f"{self.backbone} cannot be run stage by stage (a fused backbone is one stage)")
        if self.tta != "none":
            raise ValueError(f"test-time augmentation ({self.tta}) runs over the whole backbone, not stage by stage")
        if not 0 < self.frozen_stages < self.num_stages:
            raise ValueError(
                f"{self.backbone}: freeze some of its {self.num_stages} stages, not "
                f"{'all' if self.frozen_stages else 'none'}, to train the rest on the frozen ones' output"
            )

    @property
    def backbone_frozen(self) -> bool:
        return self.frozen_stages == self.num_stages

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        # Frozen stages keep their BatchNorm statistics: they run in eval mode even while training.
        if self.backbone_frozen:
            self.features.eval()
        else:
            for stage in self._stages[: self.frozen_stages]:
                stage.eval()
        if self.imagenet_head is not None:
            self.imagenet_head.eval()
        return self

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.head.parameters() if p.requires_grad)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.features.parameters() if p.requires_grad)

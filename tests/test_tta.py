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
from kennel.models.classifier import CropsAveraged, FlipAveraged
from kennel.predictor import Predictor


def test_flip_averaging_is_the_mean_of_a_photo_and_its_mirror() -> None:
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 16, 16)
    expected = (inner(x) + inner(x.flip(-1))) / 2
    assert torch.allclose(FlipAveraged(inner)(x), expected)
    assert torch.allclose(FlipAveraged(inner)(x.flip(-1)), expected, atol=1e-6)  # a mirror gives the same


def test_crop_averaging_is_the_mean_over_the_photo_and_its_four_corners() -> None:
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(2, 3, 16, 16)
    crops = CropsAveraged(inner)
    views = crops.views(x)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    # The top-left corner: 14 of 16 pixels (7/8), resized back to 16.
    corner = torch.nn.functional.interpolate(x[..., :14, :14], size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(views[1], corner)
    assert torch.allclose(crops(x), torch.stack([inner(v) for v in views]).mean(0), atol=1e-6)
    assert not torch.allclose(crops(x), inner(x), atol=1e-4)  # the corners change the features


def test_an_unknown_augmentation_is_named() -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'; known: none, flip, crops"):
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

    # The endpoint's path, at fp32 (the tolerance is for it; where bf16 measures faster, auto takes that).
    predictor = Predictor.load(flipped.artifact, precision="fp32")
    photo = _photo(1)
    here, mirrored = predictor.predict([photo, ImageOps.mirror(photo)], top_k=3)
    assert here.label == mirrored.label
    assert np.allclose([p for _, p in here.top], [p for _, p in mirrored.top], atol=1e-3)
    plain_predictor = Predictor.load(plain.artifact)
    one, other = plain_predictor.predict([photo, ImageOps.mirror(photo)], top_k=3)
    assert not np.allclose([p for _, p in one.top], [p for _, p in other.top], atol=1e-3)  # without it, not so


@pytest.mark.slow
def test_a_crops_job_serves_through_onnx_as_it_evaluated(dataset: Path) -> None:
    record = train(tiny_config(dataset, epochs=1, tta="crops", export_onnx=True), stream=None)
    assert record.status == "completed" and record.engine["extraction"]["cached"] is False
    artifact = load_artifact(record.artifact)
    assert artifact.info.tta == "crops" and isinstance(artifact.model.features, CropsAveraged)
    photo = _photo(2)
    [served] = Predictor.load(record.artifact, precision="fp32").predict([photo], top_k=1)
    with torch.no_grad():
        expected = artifact.model(artifact.preprocessing.eval_transform()(photo)[None]).softmax(1)[0]
    assert served.label == artifact.info.class_names[int(expected.argmax())]
    assert served.top[0][1] == pytest.approx(float(expected.max()), abs=1e-3)

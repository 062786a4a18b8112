"""Feature fusion (``--model a+b``): one head on several frozen backbones' features side by side, each member fed
the photo in its own normalisation and size, served as one model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from kennel.artifact import load_artifact
from kennel.config import ConfigError, load_config
from kennel.heads import LogisticFit, load_into
from kennel.job import train
from kennel.models import create_model, get_backbone
from kennel.models.classifier import Standardise
from kennel.models.fusion import Fusion, MemberInput
from kennel.predictor import Predictor
from kennel.preprocessing import Preprocessing
from kennel.serve import sagemaker

FUSED = "tiny+tiny_wide"


def test_a_member_sees_the_photo_in_its_own_normalisation_and_size() -> None:
    given = Preprocessing(40, 44, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    wanted = Preprocessing(32, 36, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = torch.rand(2, 3, 40, 40)
    as_given = (pixels - torch.tensor(given.mean).view(1, 3, 1, 1)) / torch.tensor(given.std).view(1, 3, 1, 1)
    as_wanted = (pixels - torch.tensor(wanted.mean).view(1, 3, 1, 1)) / torch.tensor(wanted.std).view(1, 3, 1, 1)
    adapted = MemberInput(given, wanted)(as_given)
    assert adapted.shape == (2, 3, 32, 32)
    expected = torch.nn.functional.interpolate(as_wanted, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(adapted, expected, atol=1e-5)
    assert MemberInput(given, given)(as_given).equal(as_given)  # the lead member gets the input as it is


def test_the_fused_backbone_takes_its_largest_members_preprocessing_and_concatenates_features() -> None:
    spec = get_backbone(FUSED)
    assert spec.preprocessing == get_backbone("tiny_wide").preprocessing
    assert [m.name for m in spec.members] == ["tiny", "tiny_wide"]
    torch.manual_seed(0)
    model = create_model(FUSED, 4, pretrained=False, freeze="all").eval()
    assert isinstance(model.features, Fusion) and model.feature_dim == 32 + 48
    image = torch.randn(3, 3, 40, 40)
    features = model.features(image)
    # The second block is the wide member on the image as it is (it leads); the first, the tiny one at 32 px.
    small = model.features.inputs[0](image)
    assert small.shape[-1] == 32
    assert torch.allclose(features[:, :32], model.features.members[0](small))
    assert torch.allclose(features[:, 32:], model.features.members[1](image))
    # The dog verdict's ImageNet logits: the members' own, averaged.
    imagenet = model.forward_imagenet(image)
    assert imagenet.shape == (3, 1000)
    heads = model.imagenet_head.heads
    assert torch.allclose(imagenet, (heads[0](features[:, :32]) + heads[1](features[:, 32:])) / 2, atol=1e-6)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("tiny+nope", "unknown backbone 'nope'"),
        ("tiny+tiny", "names a backbone twice"),
    ],
)
def test_a_bad_fused_name_says_what_is_wrong(backbone: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"model.backbone": backbone})


def test_a_weights_file_is_for_one_backbone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tiny\\+tiny_wide is fused; each member loads its own weights"):
        load_config(overrides={"model.backbone": FUSED, "model.weights": str(tmp_path / "w.safetensors")})


def test_standardising_brings_each_block_to_one_scale_and_keeps_the_whole_scale() -> None:
    torch.manual_seed(0)
    raw = torch.cat([torch.randn(400, 4) * 0.1 + 2, torch.randn(400, 2) * 0.5 - 1], dim=1)
    standardise = Standardise([4, 2])
    standardise.fit(raw)
    out = standardise(raw)
    assert torch.allclose(out.mean(0), torch.zeros(6), atol=1e-5)
    spreads = [float(block.std()) for block in out.split([4, 2], dim=1)]
    assert spreads[0] == pytest.approx(spreads[1], rel=1e-4)
    assert spreads[0] == pytest.approx((0.1 + 0.5) / 2, rel=0.1)  # the blocks' mean spread


def test_a_logistic_fit_moves_into_a_standardising_head_unchanged() -> None:
    torch.manual_seed(0)
    raw = torch.randn(50, 6) * torch.tensor([1.0, 10, 0.1, 3, 5, 0.5]) + 4
    head = torch.nn.Sequential(Standardise([2, 4]), torch.nn.Dropout(0.0), torch.nn.Linear(6, 3)).eval()
    head[0].fit(raw)
    assert torch.allclose(head[0](raw).mean(0), torch.zeros(6), atol=1e-5)
    weight, bias = torch.randn(3, 6), torch.randn(3)
    fit = LogisticFit(weight, bias, 0.1, 0.5, 1.0, 0.0, torch.zeros(3))
    load_into(head, fit)
    with torch.no_grad():
        assert torch.allclose(head(raw), raw @ weight.T + bias, atol=1e-4)


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (50, 70, 3), dtype=np.uint8))


def test_a_fused_job_trains_on_standardised_features_and_serves_as_one_model(dataset: Path) -> None:
    record = train(tiny_config(dataset, epochs=2, export_onnx=True, **{"model.backbone": FUSED}), stream=None)
    assert record.status == "completed", record.error
    assert record.engine["extraction"]["cached"] is False
    artifact = load_artifact(record.artifact)
    assert artifact.info.backbone == FUSED and artifact.info.feature_dim == 80
    assert artifact.info.preprocessing["input_size"] == 40
    standardise = artifact.model.head[0]
    assert isinstance(standardise, Standardise)
    assert not torch.equal(standardise.mean, torch.zeros(80))  # set from the training split's features
    assert standardise.widths == [32, 48]

    # The endpoint's path (the fastest fp32 backend here, ONNX Runtime or PyTorch) and the PyTorch model agree on
    # photos. At fp32: where bf16 measures faster, auto takes it, and its probabilities differ by a few 1e-3.
    predictor = Predictor.load(record.artifact, precision="fp32")
    photos = [_photo(seed) for seed in range(3)]
    served = predictor.predict(photos, top_k=3)
    image = torch.stack([artifact.preprocessing.eval_transform()(p) for p in photos])
    with torch.no_grad():
        expected = artifact.model(image).softmax(1)
    for answer, probabilities in zip(served, expected, strict=True):
        assert answer.label == artifact.info.class_names[int(probabilities.argmax())]
        assert answer.top[0][1] == pytest.approx(float(probabilities.max()), abs=1e-3)

    # The SageMaker handler functions load and answer with it too.
    import io

    buffer = io.BytesIO()
    photos[0].save(buffer, "JPEG")
    endpoint = sagemaker.model_fn(str(record.artifact))
    answer = sagemaker.predict_fn(sagemaker.input_fn(buffer.getvalue(), "image/jpeg"), endpoint)
    assert answer["model"]["backbone"] == FUSED and answer["predictions"]

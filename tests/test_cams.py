"""Heatmaps on ONNX Runtime alone (:mod:`kennel.cams`): the same maps as PyTorch's Grad-CAM for kennel's linear
heads, single and fused backbones, and a tuning trial's report makes its gallery's heatmaps without importing
PyTorch. Models of another shape are left to PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import sample_with_mistakes, tiny_config
from PIL import Image
from safetensors.torch import save_file
from torch.nn import functional

from kennel.artifact import save_artifact
from kennel.cams import CamsUnavailable, OnnxExplainer, _interpolation, head_weights
from kennel.explain import Explainer
from kennel.models import create_model, get_backbone

CLASSES = ["a", "b", "c"]


def photos(count: int) -> list[Image.Image]:
    return [
        Image.effect_mandelbrot((128, 96), (-2.0, -1.2, 1.0, 1.2), 20 + 10 * index).convert("RGB")
        for index in range(count)
    ]


def artifact(folder: Path, backbone: str, tta: str = "none") -> Path:
    """A random model of ``backbone`` with its ONNX file; a fused one's standardisation fitted, as a job fits it."""
    torch.manual_seed(0)
    model = create_model(backbone, len(CLASSES), pretrained=False).use_tta(tta)
    if model.blocks:
        model.fit_standardisation(torch.randn(64, model.feature_dim) * torch.linspace(0.1, 3.0, model.feature_dim))
    return save_artifact(model, CLASSES, get_backbone(backbone).preprocessing, folder, export_onnx=True)


@pytest.mark.parametrize(("backbone", "tta"), [("tiny", "none"), ("tiny+tiny_wide", "none"), ("tiny", "flip")])
def test_onnx_runtimes_maps_are_pytorchs_grad_cam(tmp_path: Path, backbone: str, tta: str) -> None:
    folder = artifact(tmp_path / "model", backbone, tta)
    onnx, pytorch = OnnxExplainer.load(folder), Explainer.load(folder, device="cpu")
    classes = [0, 1, 2, 0, 1]
    batch = torch.stack([pytorch.transform(photo) for photo in photos(len(classes))])
    with torch.enable_grad():
        expected = pytorch._crops(batch, classes)
    made = onnx.crops(batch.numpy(), classes)
    assert made.shape == expected.shape and made.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(made, expected, atol=2e-3)
    # Another class is another map: the weights do their part, not only the feature maps.
    assert np.abs(onnx.crops(batch.numpy(), [1, 2, 0, 1, 2]) - made).max() > 0.1


def test_the_pictures_match_pytorchs_from_the_photos(tmp_path: Path) -> None:
    folder = artifact(tmp_path / "model", "tiny+tiny_wide")
    onnx, pytorch = OnnxExplainer.load(folder), Explainer.load(folder, device="cpu")
    shown = photos(6)
    for made, expected in zip(onnx.pictures(shown, [0] * 6, 128), pytorch.pictures(shown, [0] * 6, 128), strict=True):
        assert made.size == expected.size
        # The photo is resized by PIL here and by torchvision there: a grey level apart at most.
        assert np.abs(np.asarray(made, np.int16) - np.asarray(expected, np.int16)).max() <= 8


@pytest.mark.parametrize(("source", "target"), [(3, 32), (7, 224), (9, 260), (5, 3), (1, 4)])
def test_the_resize_is_pytorchs_bilinear(source: int, target: int) -> None:
    maps = np.random.default_rng(0).random((2, source, source), dtype=np.float32)
    rows = _interpolation(source, target)
    made = np.einsum("yh,nhw,xw->nyx", rows, maps, rows)
    expected = functional.interpolate(torch.from_numpy(maps)[:, None], size=(target, target), mode="bilinear")
    np.testing.assert_allclose(made, expected[:, 0].numpy(), atol=1e-5)


def test_a_head_that_is_not_one_linear_layer_is_left_to_pytorch(tmp_path: Path) -> None:
    weights = {"head.0.weight": torch.ones(4, 8), "head.0.bias": torch.zeros(4), "head.2.weight": torch.ones(3, 4)}
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CamsUnavailable, match="not one linear layer"):
        head_weights(tmp_path)


def test_a_model_without_an_onnx_file_is_left_to_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", len(CLASSES), pretrained=False)
    folder = save_artifact(model, CLASSES, get_backbone("tiny").preprocessing, tmp_path / "m", export_onnx=False)
    with pytest.raises(CamsUnavailable, match="has an ONNX file"):
        OnnxExplainer.load(folder, {"engine": {"extraction": {"graph_file": str(tmp_path / "gone.onnx")}}})


def test_a_trials_report_makes_its_heatmaps_without_pytorch(tmp_path: Path) -> None:
    from kennel.job.run import train

    data = sample_with_mistakes(tmp_path)  # two test classes swapped: mistakes for sure
    config = tiny_config(data, epochs=1, **{"engine.backend": "onnxruntime", "engine.precision": "fp32"})
    record = train(config, study="a-study", stream=None)
    assert not (record.path / "model" / "model.onnx").exists()  # a trial's artifact has no ONNX file
    graph_file = json.loads((record.path / "job.json").read_text())["engine"]["extraction"]["graph_file"]
    assert Path(graph_file).is_file()
    code = (
        "import sys; from kennel.report import write_report; "
        f"write_report({str(record.path)!r}); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
    kept = json.loads((record.path / "evaluation" / "heatmaps.json").read_text())
    page = (record.path / "report.html").read_text()
    assert kept and all(entry["looked"] in page for entry in kept)
    # With the cache's file gone (a cleared cache), PyTorch makes them: the gallery still has its heatmaps.
    Path(graph_file).unlink()
    (record.path / "evaluation" / "heatmaps.json").unlink()
    from kennel.report import write_report

    write_report(record.path)
    again = json.loads((record.path / "evaluation" / "heatmaps.json").read_text())
    assert [entry["file"] for entry in again] == [entry["file"] for entry in kept]

"""The model artifact: safetensors + artifact.json + a verified ONNX export, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model as untrained_tiny_model

from kennel.artifact import ArtifactError, OnnxExportError, load_artifact, save_artifact
from kennel.inference import export as export_module
from kennel.models import Classifier, get_backbone

CLASSES = ["Beagle", "Bulldog", "Corgi"]


def tiny_model(seed: int = 0) -> Classifier:
    model = untrained_tiny_model(len(CLASSES), seed)
    # Give BatchNorm non-trivial statistics, so a round trip that lost buffers would show.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Classifier, Path]:
    model = tiny_model()
    out = tmp_path_factory.mktemp("artifact") / "model"
    path = save_artifact(
        model,
        CLASSES,
        get_backbone("tiny").preprocessing,
        out,
        metrics={"test_accuracy": 0.5},
        class_folders=["001.Beagle", "002.Bulldog", "003.Corgi"],
    )
    return model, path


def test_folder_contents_and_description(saved) -> None:
    _, path = saved
    assert {p.name for p in path.iterdir()} == {"artifact.json", "model.safetensors", "model.onnx"}
    info = json.loads((path / "artifact.json").read_text())
    assert info["format_version"] == 1
    assert info["backbone"] == "tiny" and info["num_classes"] == 3 and info["class_names"] == CLASSES
    assert info["class_folders"][0] == "001.Beagle"
    assert info["preprocessing"] == get_backbone("tiny").preprocessing.to_dict()
    assert info["metrics"] == {"test_accuracy": 0.5}
    assert info["has_imagenet_head"] is True
    onnx = info["onnx"]
    assert onnx["outputs"] == ["logits", "imagenet_logits"]
    assert onnx["export_s"] > 0
    assert max(onnx["max_abs_diff"].values()) <= onnx["tolerance"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_round_trip_reproduces_identical_logits(saved) -> None:
    model, path = saved
    loaded = load_artifact(path)
    assert not loaded.model.training
    assert loaded.class_names == CLASSES and loaded.preprocessing == get_backbone("tiny").preprocessing
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), model(images))
        assert torch.equal(loaded.model.forward_imagenet(images), model.forward_imagenet(images))


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_agrees_with_torch_at_other_batch_sizes(saved, batch: int) -> None:
    import onnxruntime as ort

    model, path = saved
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    images = torch.randn(batch, 3, 32, 32)
    logits, imagenet = session.run(["logits", "imagenet_logits"], {"image": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(images).numpy(), atol=1e-4)
        np.testing.assert_allclose(imagenet, model.forward_imagenet(images).numpy(), atol=1e-4)


def test_missing_weights_fail_clearly(saved, tmp_path: Path) -> None:
    _, path = saved
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "artifact.json").write_text((path / "artifact.json").read_text())
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing"):
        load_artifact(broken)


def test_not_an_artifact_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"artifact\.json is missing"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_corrupt_or_mismatched_weights_fail_clearly(saved, tmp_path: Path) -> None:
    _, path = saved
    folder = tmp_path / "bad"
    folder.mkdir()
    info = json.loads((path / "artifact.json").read_text())
    (folder / "artifact.json").write_text(json.dumps({**info, "num_classes": 7}))
    (folder / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match="does not fit backbone tiny"):
        load_artifact(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(folder)


def test_newer_format_is_refused(saved, tmp_path: Path) -> None:
    _, path = saved
    info = json.loads((path / "artifact.json").read_text())
    (tmp_path / "artifact.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ArtifactError, match="upgrade kennel"):
        load_artifact(tmp_path)


def test_replacing_an_artifact_and_a_failed_export_keep_a_whole_one(tmp_path: Path, monkeypatch) -> None:
    pre = get_backbone("tiny").preprocessing
    out = tmp_path / "model"
    save_artifact(tiny_model(1), CLASSES, pre, out, export_onnx=False)
    assert not (out / "model.onnx").exists()
    assert load_artifact(out).info.onnx is None
    # A failed ONNX check leaves the previous artifact exactly as it was, and no temporary folder.
    before = (out / "model.safetensors").read_bytes()
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)
    with pytest.raises(OnnxExportError, match="disagrees with PyTorch"):
        save_artifact(tiny_model(2), CLASSES, pre, out, metrics={"n": 2})
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    # A successful save replaces it.
    save_artifact(tiny_model(3), CLASSES, pre, out, metrics={"n": 3}, export_onnx=False)
    assert load_artifact(out).info.metrics == {"n": 3}
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_model_without_imagenet_head_exports_only_logits(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = tiny_model()
    model.imagenet_head = None
    path = save_artifact(model, CLASSES, get_backbone("tiny").preprocessing, tmp_path / "m")
    loaded = load_artifact(path)
    assert loaded.model.imagenet_head is None and loaded.info.has_imagenet_head is False
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_class_names_must_match_the_head(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        save_artifact(tiny_model(), ["only one"], get_backbone("tiny").preprocessing, tmp_path / "m")


@pytest.mark.slow
def test_wrapped_and_hooked_models_save_their_classifier(tmp_path: Path) -> None:
    import threading

    model = tiny_model()

    class Recorder:  # a hook holding a lock, as an observer's might: copy.deepcopy would fail on it
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, module, inputs, output) -> None:
            with self.lock:
                pass

    model.features.register_forward_hook(Recorder())
    path = save_artifact(
        torch.compile(model), CLASSES, get_backbone("tiny").preprocessing, tmp_path / "m", export_onnx=False
    )
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_artifact(path).model(images), model(images))
    with pytest.raises(TypeError, match="Classifier"):
        save_artifact(torch.nn.Linear(2, 3), CLASSES, get_backbone("tiny").preprocessing, tmp_path / "x")

"""The predictor on a tiny artifact: top-k, ONNX Runtime vs PyTorch, inputs, and the ``kennel predict`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import ARTIFACT_CLASSES, kennel, tiny_artifact
from PIL import Image

from kennel.artifact import ArtifactError, load_artifact
from kennel.data.images import ImageError
from kennel.predictor import Prediction, Predictor

CLASSES = ARTIFACT_CLASSES  # the shared artifact_dir fixture's


def same(top: list[tuple[str, float]], other: list[tuple[str, float]], tolerance: float = 1e-5) -> bool:
    """The same classes in the same order with probabilities equal within ``tolerance``."""
    return [n for n, _ in top] == [n for n, _ in other] and all(
        abs(p - q) <= tolerance for (_, p), (_, q) in zip(top, other, strict=True)
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(5):
        path = folder / f"dog{i}.jpg"
        image = Image.new("RGB", (60 + 7 * i, 45), (50 * i, 255 - 40 * i, (90 * i) % 256))
        image.paste((255, 255, 255), (5, 5, 20 + 3 * i, 30))
        image.save(path, quality=95)
        files.append(path)
    return files


def test_auto_runs_the_fastest_backend_measured_here(artifact_dir: Path) -> None:
    predictor = Predictor.load(artifact_dir)
    speeds = predictor.engine.speeds
    assert {"onnxruntime-fp32", "torch-eager", "torch-channels-last"} <= set(speeds)
    assert predictor.runtime == max(speeds, key=speeds.__getitem__) and predictor.device.type == "cpu"
    assert "onnxruntime-int8" not in speeds  # the artifact has no int8 model


def test_onnx_only_use_does_not_build_the_pytorch_model(artifact_dir: Path) -> None:
    predictor = Predictor.load(artifact_dir, runtime="onnxruntime")
    assert predictor.runtime == "onnxruntime-fp32" and predictor.artifact.model is None


def test_top_k_is_sorted_and_probabilities_sum_to_one(artifact_dir: Path, photos: list[Path]) -> None:
    predictor = Predictor.load(artifact_dir)
    full = predictor.predict(photos, top_k=len(CLASSES))
    top3 = predictor.predict(photos, top_k=3)
    for every, three in zip(full, top3, strict=True):
        probabilities = [p for _, p in every.top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert {name for name, _ in every.top} == set(CLASSES)
        assert same(three.top, every.top[:3])
        assert three.label == CLASSES[three.index] and three.probability == every.top[0][1]
    assert len(predictor.predict(photos[:1], top_k=50)[0].top) == len(CLASSES)  # clipped to the classes


def test_onnx_and_torch_runtimes_agree(artifact_dir: Path, photos: list[Path]) -> None:
    onnx = Predictor.load(artifact_dir, runtime="onnx")
    # A runtime's name: the fastest of its backends (at fp32, which the tolerance is for; bf16 may be faster here).
    torch_ = Predictor.load(artifact_dir, runtime="torch", precision="fp32")
    assert onnx.runtime == "onnxruntime-fp32" and torch_.runtime.startswith("torch-")
    batch = onnx.preprocess(photos)
    a, b = onnx.predict_batch(batch), torch_.predict_batch(batch)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.imagenet_logits, b.imagenet_logits, atol=1e-4, rtol=1e-4)
    assert a.imagenet_logits.shape == (len(photos), 1000)
    for x, y in zip(onnx.predict(photos), torch_.predict(photos), strict=True):
        assert same(x.top, y.top)


def test_predictions_use_the_artifacts_preprocessing(artifact_dir: Path, photos: list[Path]) -> None:
    artifact = load_artifact(artifact_dir)
    transform = artifact.preprocessing.eval_transform()
    with torch.no_grad():
        logits = artifact.model(torch.stack([transform(Image.open(p).convert("RGB")) for p in photos]))
    expected = logits.softmax(dim=1).max(dim=1)
    got = Predictor(artifact, runtime="torch").predict(photos, top_k=1)
    assert [p.index for p in got] == expected.indices.tolist()
    assert [p.probability for p in got] == pytest.approx(expected.values.tolist(), abs=1e-6)


def test_pil_images_paths_and_batching_agree(artifact_dir: Path, photos: list[Path]) -> None:
    predictor = Predictor.load(artifact_dir)
    from_paths = predictor.predict(photos, batch_size=32)
    from_images = predictor.predict([Image.open(p) for p in photos], batch_size=2)
    assert all(same(a.top, b.top) for a, b in zip(from_paths, from_images, strict=True))
    grey = predictor.predict([Image.open(photos[0]).convert("L"), Image.open(photos[0]).convert("RGBA")])
    assert len(grey) == 2 and all(isinstance(p, Prediction) for p in grey)
    assert predictor.predict([]) == []


def test_bad_inputs_fail_clearly(artifact_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor.load(artifact_dir)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(ImageError, match=r"notes\.jpg"):
        predictor.predict([text])
    with pytest.raises(ImageError, match="no such file"):
        predictor.predict([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="expected a batch"):
        predictor.predict_batch(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        Predictor.load(artifact_dir, runtime="tensorrt")


def test_without_onnx_auto_falls_back_to_torch(tmp_path: Path) -> None:
    path = tiny_artifact(tmp_path / "m", ["a", "b"], export_onnx=False)
    assert Predictor.load(path).runtime.startswith("torch-")
    with pytest.raises(ArtifactError, match="no fp32 ONNX file"):
        Predictor.load(path, runtime="onnx")


def test_prediction_to_dict() -> None:
    prediction = Prediction(1, [("Beagle", 0.75), ("Pug", 0.25)])
    assert prediction.to_dict() == {
        "index": 1,
        "label": "Beagle",
        "probability": 0.75,
        "top": [{"label": "Beagle", "probability": 0.75}, {"label": "Pug", "probability": 0.25}],
    }


# --- kennel predict ---------------------------------------------------------------------------------------------


def run_cli(*args: str):
    return kennel("predict", *args)


def test_cli_prints_a_table_per_photo(artifact_dir: Path, photos: list[Path]) -> None:
    result = run_cli("--model", str(artifact_dir), str(photos[0]), str(photos[1]), "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert result.output.count("dog") >= 2 and "%" in result.output and "█" in result.output


def test_cli_json_and_folders(artifact_dir: Path, photos: list[Path]) -> None:
    result = run_cli("--model", str(artifact_dir), str(photos[0].parent), "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["file"]).name for r in rows] == [p.name for p in photos]
    assert all(len(r["top"]) == 2 and r["label"] in CLASSES for r in rows)


def test_cli_accepts_a_job_folder(artifact_dir: Path, photos: list[Path], tmp_path: Path) -> None:
    import shutil

    from kennel.jobs import create_job

    job = create_job("predict-test", root=tmp_path / "jobs", status="completed")
    shutil.copytree(artifact_dir, job.path / "model")
    result = run_cli("--model", str(job.path), str(photos[0]), "--json")
    assert result.exit_code == 0, result.output


def test_cli_errors_are_clear(artifact_dir: Path, photos: list[Path], tmp_path: Path) -> None:
    missing = run_cli("--model", str(tmp_path / "no-such-model"), str(photos[0]))
    assert missing.exit_code == 2 and "no model folder" in missing.output
    assert "Traceback" not in missing.output and isinstance(missing.exception, SystemExit)
    not_artifact = run_cli("--model", str(tmp_path), str(photos[0]))
    assert not_artifact.exit_code == 2 and "artifact.json is missing" in not_artifact.output
    text = tmp_path / "readme.jpg"
    text.write_text("hello")
    bad = run_cli("--model", str(artifact_dir), str(text), str(photos[0]), "--json")
    assert bad.exit_code == 1 and "cannot decode image" in bad.output
    assert isinstance(bad.exception, SystemExit)


def test_accuracy_counts_only_photos_whose_folder_names_a_class(
    artifact_dir: Path, photos: list[Path], tmp_path: Path
) -> None:
    """One photo in the folder of the class it is predicted as, one in another class's folder (without a number:
    a folder names a class either way), three in folders that name none: 50% of 2, 3 skipped."""
    import shutil

    predicted = [p.label for p in Predictor.load(artifact_dir).predict(photos)]
    other = next(name for name in CLASSES if name != predicted[1])
    mixed = tmp_path / "mixed"
    folders = [f"001.{predicted[0]}".replace(" ", "_"), other.lower(), "002.Siberian_husky", "002.Siberian_husky", "."]
    for photo, folder in zip(photos, folders, strict=True):
        (mixed / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, mixed / folder / photo.name)
    summary = "accuracy 50.0% (1 of 2 in folders that name a class of the model; 3 skipped: their folders name none)"

    out = tmp_path / "predictions.csv"
    batch = run_cli("--model", str(artifact_dir), str(mixed), "--out", str(out))
    assert batch.exit_code == 0, batch.output
    assert batch.stdout.strip() == f"5 of 5 photos predicted -> {out}; {summary}"
    rows = {Path(row["path"]).name: row for row in csv.DictReader(out.open())}
    assert [rows[p.name]["true_label"] for p in photos] == [predicted[0], other, "", "", ""]
    assert [rows[p.name]["correct"] for p in photos] == ["1", "0", "", "", ""]

    shown = run_cli("--model", str(artifact_dir), str(mixed), "-k", "1")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip().splitlines()[-1] == f"5 of 5 photos predicted; {summary}"
    as_json = run_cli("--model", str(artifact_dir), str(mixed), "--json")  # the line goes to stderr: JSON stays JSON
    assert len(json.loads(as_json.stdout)) == 5 and f"5 of 5 photos predicted; {summary}" in as_json.stderr


def test_one_photo_gets_no_summary_line(artifact_dir: Path, photos: list[Path]) -> None:
    result = run_cli("--model", str(artifact_dir), str(photos[0]))
    assert result.exit_code == 0 and "photos predicted" not in result.output

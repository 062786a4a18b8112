"""Explanations: a Grad-CAM heatmap over the photo (peaking where the evidence is, zero outside the model's crop), its
overlay, a fused backbone, a test-time augmented model, threads, the report's gallery of mistakes and the PNG that
``kennel predict --explain`` writes."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import sample_with_mistakes, section_statuses, tiny_artifact, tiny_config
from PIL import Image
from torch import nn

from kennel.explain import DISPLAY_SIDE, Explainer, ExplainError, explain, explain_png
from kennel.models import Classifier, create_model, get_backbone
from kennel.overlays import overlay, overlay_png

PHOTO_SIZE = (128, 96)  # width, height: the tiny backbone resizes it to 48x36 and crops the middle 32x32
CROP_X = (21.3, 106.7)  # where that crop lies in the photo: 8..40 of 48 resized columns, times 96 / 36
SQUARE = 24


def brightness_model() -> Classifier:
    """The tiny backbone set by hand so that class 0 means bright and class 1 dark: every filter averages what it
    sees, and the head adds (class 0) or subtracts (class 1) the pooled features. Its evidence for class 0 is
    wherever the photo is bright, so that is where Grad-CAM must point."""
    model = create_model("tiny", 2, pretrained=False)
    with torch.no_grad():
        for module in model.features.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()  # mean 0, variance 1, scale 1, shift 0: the identity
        linear = model.head[-1]
        linear.weight.copy_(torch.stack([torch.ones(linear.in_features), -torch.ones(linear.in_features)]))
        linear.bias.zero_()
    return model.eval()


def square_photo(left: int, top: int) -> Image.Image:
    photo = Image.new("RGB", PHOTO_SIZE, (10, 10, 10))
    photo.paste((250, 250, 250), (left, top, left + SQUARE, top + SQUARE))
    return photo


@pytest.fixture(scope="module")
def brightness() -> Explainer:
    return Explainer(brightness_model(), ["bright", "dark"], get_backbone("tiny").preprocessing, device="cpu")


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
    return int(x), int(y)


@pytest.mark.parametrize("corner", [(30, 15), (78, 60)])
def test_the_heatmap_peaks_where_the_evidence_is(brightness: Explainer, corner: tuple[int, int]) -> None:
    left, top = corner
    explanation = brightness.explain(square_photo(left, top))
    heatmap = explanation.heatmap
    assert heatmap.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0]) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0 and heatmap.max() > 0.9
    assert (explanation.label, explanation.class_index) == ("bright", 0) and explanation.probability > 0.5
    x, y = peak(heatmap)
    cell = 12  # the last feature map is 4x4 over a crop of 85 photo pixels: a cell is about 21 px
    assert left - cell <= x <= left + SQUARE + cell and top - cell <= y <= top + SQUARE + cell
    inside = heatmap[top : top + SQUARE, left : left + SQUARE].mean()
    assert inside > 2 * heatmap[:, int(CROP_X[0]) + 1 : int(CROP_X[1])].mean()


def test_the_heatmap_moves_with_the_patch(brightness: Explainer) -> None:
    first, second = (brightness.explain(square_photo(*at)).heatmap for at in [(30, 15), (78, 60)])
    assert peak(first)[0] < peak(second)[0] and peak(first)[1] < peak(second)[1]


def test_outside_the_crop_the_heatmap_is_zero(brightness: Explainer) -> None:
    heatmap = brightness.explain(square_photo(24, 10)).heatmap  # the square touches the crop's left edge
    assert heatmap[:, : int(CROP_X[0]) - 2].max() == 0.0 and heatmap[:, int(CROP_X[1]) + 2 :].max() == 0.0
    assert heatmap[:, int(CROP_X[0]) + 2 : int(CROP_X[1]) - 2].max() > 0.5


def test_a_chosen_class_is_explained(brightness: Explainer) -> None:
    explanation = brightness.explain(square_photo(30, 15), class_index=1)
    assert (explanation.label, explanation.class_index) == ("dark", 1)
    assert explanation.probability == pytest.approx(dict(explanation.ranking)["dark"])
    assert [name for name, _ in explanation.ranking] == ["bright", "dark"]
    with pytest.raises(ExplainError, match="class index 2"):
        brightness.explain(square_photo(30, 15), class_index=2)


def test_the_overlay_png_has_the_photo_size(brightness: Explainer) -> None:
    photo = square_photo(30, 15)
    heatmap = brightness.explain(photo).heatmap
    decoded = Image.open(io.BytesIO(overlay_png(photo, heatmap)))
    assert decoded.format == "PNG" and decoded.size == PHOTO_SIZE and decoded.mode == "RGB"
    hot, cold = np.asarray(decoded.convert("RGB"), np.int16)[peak(heatmap)[::-1]], np.asarray(photo)[0, 0]
    assert hot[0] > hot[2] and tuple(np.asarray(overlay(photo, np.zeros((5, 5))))[0, 0]) != tuple(cold)


def test_a_fused_backbone_averages_its_members(tmp_path: Path) -> None:
    from kennel.artifact import save_artifact

    torch.manual_seed(0)
    name = "tiny+tiny_wide"
    model = create_model(name, 3, pretrained=False)
    folder = save_artifact(model, ["a", "b", "c"], get_backbone(name).preprocessing, tmp_path / "m", export_onnx=False)
    explainer = Explainer.load(folder, device="cpu")
    names = {id(module): name for name, module in explainer.net.named_modules()}
    assert [names[id(layer)] for layer in explainer.layers] == ["0.members.0.stage2", "0.members.1.stage2"]
    photo = Image.effect_mandelbrot(PHOTO_SIZE, (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    heatmap = explainer.explain(photo).heatmap
    assert heatmap.shape == (PHOTO_SIZE[1], PHOTO_SIZE[0]) and 0.0 <= heatmap.min() < heatmap.max() <= 1.0


def fused_explainer() -> Explainer:
    torch.manual_seed(0)
    name = "tiny+tiny_wide"
    return Explainer(create_model(name, 3, pretrained=False), ["a", "b", "c"], get_backbone(name).preprocessing, "cpu")


def test_kennels_grad_cam_is_the_grad_cam_packages(tmp_path: Path) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from kennel.explain import grad_cams

    explainer = fused_explainer()
    photos = [Image.effect_mandelbrot(PHOTO_SIZE, (-2.0 + i / 3, -1.2, 1.0, 1.2), 60).convert("RGB") for i in range(3)]
    batch = torch.stack([explainer.transform(photo) for photo in photos])
    classes = [0, 2, 1]
    with torch.enable_grad():
        ours = grad_cams(explainer.net, explainer.layers, batch, classes)
        cam = GradCAM(explainer.net, explainer.layers)
        try:
            theirs = cam(batch.clone().requires_grad_(True), targets=[ClassifierOutputTarget(c) for c in classes])
        finally:
            cam.activations_and_grads.release()
    assert ours.shape == theirs.shape == (3, 40, 40) and ours.max() > 0.99
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_a_batch_of_pictures_is_each_photo_explained_alone() -> None:
    explainer = fused_explainer()
    photos = [
        Image.effect_mandelbrot((120 + 9 * i, 90), (-2.0 + i / 4, -1.2, 1.0, 1.2), 60).convert("RGB") for i in range(11)
    ]
    classes = [i % 3 for i in range(11)]  # more than a batch: two batches of the explainer's, the second short
    pictures = explainer.pictures(photos, classes, max_side=64)
    for photo, index, picture in zip(photos, classes, pictures, strict=True):
        shown = photo.copy()
        shown.thumbnail((64, 64))
        alone = overlay(shown, explainer.explain(photo, index, size=shown.size).heatmap)
        assert picture.size == shown.size
        assert np.abs(np.asarray(picture, np.int16) - np.asarray(alone, np.int16)).max() <= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_explains_as_the_cpu_does(brightness: Explainer) -> None:
    on_gpu = Explainer(brightness_model(), ["bright", "dark"], get_backbone("tiny").preprocessing, device="cuda")
    photo = square_photo(30, 15)
    np.testing.assert_allclose(on_gpu.explain(photo).heatmap, brightness.explain(photo).heatmap, atol=1e-3)


def test_a_model_with_test_time_augmentation_explains_its_plain_view(brightness: Explainer) -> None:
    model = brightness_model().use_tta("flip")
    explainer = Explainer(model, ["bright", "dark"], get_backbone("tiny").preprocessing, device="cpu")
    photo = square_photo(30, 15)
    explanation = explainer.explain(photo)
    with torch.no_grad():
        served = model(explainer.transform(photo).unsqueeze(0)).softmax(dim=1)[0, 0].item()
    assert explanation.probability == pytest.approx(served, abs=1e-6)  # the whole model's, as the endpoint's
    assert peak(explanation.heatmap) == peak(brightness.explain(photo).heatmap)


def test_an_artifact_explains_alike_from_a_folder_an_artifact_or_a_predictor(tmp_path: Path) -> None:
    from kennel.artifact import load_artifact
    from kennel.predictor import Predictor

    folder = tiny_artifact(tmp_path / "m", ["a", "b", "c"], head_scale=20, export_onnx=False)
    photo = Image.effect_mandelbrot(PHOTO_SIZE, (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    sources = [folder, load_artifact(folder), Predictor.load(folder, runtime="torch", device="cpu")]
    heatmaps = [explain(source, photo).heatmap for source in sources]
    for heatmap in heatmaps[1:]:
        np.testing.assert_allclose(heatmap, heatmaps[0], atol=1e-5)
    big = photo.resize((2 * DISPLAY_SIDE, 3 * DISPLAY_SIDE // 2))
    for given in (big, _png(big)):
        decoded = Image.open(io.BytesIO(explain_png(folder, given)))
        assert decoded.size == (DISPLAY_SIDE, 3 * DISPLAY_SIDE // 4)  # shrunk for a person, the aspect kept


def test_threads_explain_one_at_a_time(brightness: Explainer) -> None:
    photos = [square_photo(30 + 5 * i, 15 + 5 * i) for i in range(6)]
    alone = [brightness.explain(photo).heatmap for photo in photos]
    together: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, brightness.explain(photos[i]).heatmap))
        for i in range(len(photos))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, heatmap in enumerate(alone):
        np.testing.assert_allclose(together[i], heatmap, atol=1e-6)


def test_the_report_gallery_shows_where_the_model_looked(tmp_path: Path) -> None:
    from kennel.job.run import train

    data = sample_with_mistakes(tmp_path)  # two test classes swapped: mistakes for sure
    record = train(tiny_config(data, epochs=1), stream=None)
    html = (record.path / "report.html").read_text()
    mistakes = html[html.index('<section id="mistakes"') :]
    mistakes = mistakes[: mistakes.index("</section>")]
    photos = re.findall(r'<img class="photo"', mistakes)
    looked = re.findall(r'<img class="looked" alt="where the model looked for [^"]+" src="data:image/png', mistakes)
    assert photos and len(looked) == len(photos)
    assert 'id="looked-toggle"' in mistakes
    kept = json.loads((record.path / "evaluation" / "heatmaps.json").read_text())  # made by the job, on its model
    assert len(kept) == len(looked) and all(entry["looked"] in mistakes for entry in kept)


def test_a_trial_leaves_its_gallery_to_kennel_report(tmp_path: Path) -> None:
    from helpers import kennel

    from kennel.job.run import train

    data = sample_with_mistakes(tmp_path)  # two test classes swapped: mistakes for sure
    record = train(tiny_config(data, epochs=1), study="a-study", stream=None)
    assert not (record.path / "evaluation" / "heatmaps.json").exists()
    page = (record.path / "report.html").read_text()
    assert section_statuses(page)["mistakes"] == "missing" and f"kennel report {record.id} shows them" in page
    assert "looked-toggle" not in page
    assert kennel("report", record.id).exit_code == 0
    page = (record.path / "report.html").read_text()
    assert section_statuses(page)["mistakes"] == "ok" and 'id="looked-toggle"' in page
    assert json.loads((record.path / "evaluation" / "heatmaps.json").read_text())  # kept for the next page


def test_the_gallery_says_why_it_has_no_heatmaps(tmp_path: Path) -> None:
    from kennel.report.data import ReportData
    from kennel.report.gallery import build_gallery

    photo = tmp_path / "dog.jpg"
    square_photo(30, 15).save(photo)
    mistake = {"file": str(photo), "true": "a", "predicted": "b", "probability": 0.9, "true_probability": 0.1}
    gallery = build_gallery(ReportData(tmp_path), [mistake])
    assert gallery.cards[0]["png"] and gallery.cards[0]["looked"] is None
    assert gallery.looked_note == "no heatmaps: the job has no model artifact with PyTorch weights"


def test_the_command_line_writes_the_overlay(tmp_path: Path, monkeypatch, capsys) -> None:
    from kennel.cli.explain_cli import explain_command_output

    folder = tiny_artifact(tmp_path / "m", ["Akita", "Beagle", "Boxer"], head_scale=20, export_onnx=False)
    photo = tmp_path / "photos" / "rex.jpg"
    photo.parent.mkdir()
    square_photo(30, 15).save(photo)
    monkeypatch.chdir(tmp_path)
    written = explain_command_output(folder, photo, None, top_k=2)
    assert written == tmp_path / "rex-explained.png"
    assert Image.open(written).size == PHOTO_SIZE
    said = capsys.readouterr().out
    assert str(written) in said and sum(name in said for name in ["Akita", "Beagle", "Boxer"]) == 2
    assert explain_command_output(folder, photo, tmp_path / "out", top_k=1) == tmp_path / "out"  # a file name
    (tmp_path / "folder").mkdir()
    assert explain_command_output(folder, photo, tmp_path / "folder", top_k=1) == tmp_path / "folder/rex-explained.png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_endpoint_explains_a_photo_on_request(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from helpers import LOOPBACK, encode

    from kennel.serve.app import create_app

    folder = tiny_artifact(tmp_path / "m", ["a", "b", "c"], head_scale=20, export_onnx=False)
    with TestClient(create_app(folder), base_url=LOOPBACK) as client:
        photo = Image.effect_mandelbrot((300, 200), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
        answer = client.post("/explain", content=encode(photo), headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text
        width, height = Image.open(io.BytesIO(answer.content)).size
        assert width * 2 == height * 3  # the photo's shape
        refused = client.post("/explain", content=b"nope", headers={"content-type": "image/jpeg"})
        assert refused.status_code == 415 and refused.json()["error"]["code"] == "not_an_image"
        assert "Where did it look?" in client.get("/").text

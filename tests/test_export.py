"""``kennel export``: every format, loaded back in a fresh Python whose folder holds only the exported files and
where kennel and PyTorch cannot be imported, predicts what kennel's own Predictor predicts for the same photos;
the handler's preprocessing is torchvision's; and the command's errors are one line each."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ARTIFACT_CLASSES, kennel, tiny_artifact
from PIL import Image

from kennel.cli import export as export_command  # noqa: F401  (adds the command to the app)
from kennel.export import EXPORT_FORMATS, export_model
from kennel.export.standalone import REQUIREMENTS, inference

VENV_BIN = Path(sys.executable).parent
# Loaded by the fresh Python before anything else (from PYTHONPATH): any import of kennel or PyTorch fails there.
BLOCKER = 'import sys\nsys.modules["kennel"] = None\nsys.modules["torch"] = None\n'
PRELUDE = """\
import json, sys
assert sys.modules["kennel"] is None and sys.modules["torch"] is None, "sitecustomize did not block kennel"
photos = json.loads(sys.argv[1])
"""
TOLERANCE = 1e-3  # on probabilities: Pillow's resize and torchvision's differ by a rounding here and there


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Photos of several sizes and kinds: landscape, portrait, a large JPEG (decoded at a reduced scale), grayscale
    and a PNG with transparency."""
    folder = tmp_path_factory.mktemp("export-photos")
    rng = np.random.default_rng(7)
    shapes = {"wide.jpg": (300, 200), "tall.jpg": (60, 97), "large.jpg": (640, 480), "gray.jpg": (120, 80)}
    files = []
    for i, (name, (width, height)) in enumerate([*shapes.items(), ("clear.png", (90, 70))]):
        y, x = np.mgrid[0:height, 0:width] / max(width, height)
        colour = rng.uniform(0, 255, 3)
        pixels = np.clip(colour * (0.3 + x[..., None]) + 80 * np.sin(6 * y + i)[..., None], 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        if name.startswith("gray"):
            image = image.convert("L")
        if name.endswith(".png"):
            image = image.convert("RGBA")
            image.putalpha(Image.fromarray((255 * (x > 0.4)).astype(np.uint8)))
        image.save(folder / name, quality=95) if name.endswith(".jpg") else image.save(folder / name)
        files.append(folder / name)
    return files


@pytest.fixture(scope="module")
def expected(artifact_dir: Path, photos: list[Path]) -> list[list[tuple[str, float]]]:
    """kennel's own ranking of every class for each photo, on PyTorch (not the ONNX file every export ships). The
    tiny model ranks Boxer first for most photos: the probabilities of every class are what tell photos apart."""
    from kennel.predictor import Predictor

    predictor = Predictor.load(artifact_dir, runtime="torch")
    return [p.top for p in predictor.predict(photos, top_k=len(ARTIFACT_CLASSES))]


def agree(answer: list[dict[str, Any]], ranking: list[tuple[str, float]], tolerance: float = TOLERANCE) -> bool:
    """The first classes of kennel's ``ranking``, in its order, with probabilities within ``tolerance``."""
    top = ranking[: len(answer)]
    return [a["label"] for a in answer] == [name for name, _ in top] and all(
        abs(a["probability"] - p) <= tolerance for a, (_, p) in zip(answer, top, strict=True)
    )


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a PYTHONPATH of its own; in its place, the folder of the blocking sitecustomize.
    The venv's bin first on PATH, as where it is activated (mlflow models serve runs uvicorn from PATH)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(blocker), "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"}


def run_isolated(code: str, folder: Path, photos: list[Path], tmp_path: Path) -> Any:
    """Run ``code`` in a fresh Python in ``folder`` without kennel or PyTorch; the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), json.dumps([str(p) for p in photos])],
        cwd=folder,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def only_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- sagemaker ----------------------------------------------------------------------------------------------------

SAGEMAKER = """
import base64, inference  # code/, which SageMaker's container puts on the path
model = inference.model_fn(".")
def answer(body, content_type):
    text, answered_type = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model))
    assert answered_type == "application/json"
    return json.loads(text)
answers = [answer(open(p, "rb").read(), "image/png" if p.endswith(".png") else "image/jpeg") for p in photos]
request = json.dumps({"image": base64.b64encode(open(photos[0], "rb").read()).decode(), "top_k": 2})
answers.append(answer(request, "application/json"))
try:
    inference.input_fn(b"hello", "text/csv")
    refused = ""
except ValueError as error:
    refused = str(error)
print(json.dumps({"answers": answers, "refused": refused}))
"""


def test_sagemaker_tarball_has_the_container_layout(artifact_dir: Path, tmp_path: Path) -> None:
    exported = export_model(artifact_dir, "sagemaker", tmp_path / "out")
    assert exported.files == [Path("model.tar.gz")]
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        requirements = tar.extractfile("code/requirements.txt").read().decode().split()
    assert sorted(members) == ["code/inference.py", "code/requirements.txt", "model.onnx"]
    assert all(m.uid == 0 and m.mode == 0o644 for m in members.values())
    assert requirements == list(REQUIREMENTS)
    assert {r.split(">=")[0] for r in requirements} == {"onnxruntime", "pillow", "numpy"}


def test_sagemaker_handler_predicts_like_kennel_without_kennel(
    artifact_dir: Path, photos: list[Path], expected: list, tmp_path: Path
) -> None:
    export_model(artifact_dir, "sagemaker", tmp_path / "out")
    unpacked = tmp_path / "opt-ml-model"
    with tarfile.open(tmp_path / "out" / "model.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
    result = run_isolated(f"sys.path.insert(0, 'code')\n{SAGEMAKER}", unpacked, photos, tmp_path)
    *answers, json_answer = result["answers"]
    assert all(len(a["predictions"]) == 5 for a in answers)  # the handler's default top_k
    assert all(agree(a["predictions"], ranking) for a, ranking in zip(answers, expected, strict=True))
    assert answers[0]["model"] == {"backbone": "tiny", "classes": len(ARTIFACT_CLASSES)}
    assert len(json_answer["predictions"]) == 2 and agree(json_answer["predictions"], expected[0])
    assert "'text/csv' is not accepted" in result["refused"]


# --- onnx ---------------------------------------------------------------------------------------------------------

ONNX = """
import numpy as np, onnxruntime
from PIL import Image
session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels, pre = json.loads(meta["labels"]), json.loads(meta["preprocessing"])
def prepare(path):  # what a consumer of the metadata writes: resize the short side, crop the centre, normalise
    image = Image.open(path).convert("RGB")
    scale = pre["resize_size"] / min(image.size)
    image = image.resize([int(side * scale) for side in image.size], Image.Resampling.BILINEAR)
    left, top = (image.size[0] - pre["input_size"]) // 2, (image.size[1] - pre["input_size"]) // 2
    image = image.crop((left, top, left + pre["input_size"], top + pre["input_size"]))
    pixels = (np.asarray(image, dtype=np.float32) / 255 - pre["mean"]) / pre["std"]
    return pixels.transpose(2, 0, 1).astype(np.float32)
logits = session.run(["logits"], {session.get_inputs()[0].name: np.stack([prepare(p) for p in photos])})[0]
probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
ranked = [[{"label": labels[i], "probability": float(row[i])} for i in np.argsort(-row)] for row in probabilities]
print(json.dumps({"ranked": ranked, "meta": meta}))
"""


def test_onnx_export_carries_labels_and_preprocessing(
    artifact_dir: Path, photos: list[Path], expected: list, tmp_path: Path
) -> None:
    from kennel import __version__
    from kennel.artifact import read_info

    export_model(artifact_dir, "onnx", tmp_path / "out")
    assert only_files(tmp_path / "out") == ["model.onnx"]
    jpegs = [p for p in photos if p.suffix == ".jpg"]
    result = run_isolated(ONNX, tmp_path / "out", jpegs, tmp_path)
    meta = result["meta"]
    assert json.loads(meta["labels"]) == ARTIFACT_CLASSES
    assert json.loads(meta["preprocessing"]) == read_info(artifact_dir).preprocessing
    assert meta["backbone"] == "tiny" and meta["kennel_version"] == __version__
    # This consumer decodes JPEGs at full size and crops at floor offsets, where kennel decodes at a reduced scale
    # and rounds: close, not equal.
    kennel_ranking = [ranking for photo, ranking in zip(photos, expected, strict=True) if photo.suffix == ".jpg"]
    assert all(agree(r, k, tolerance=0.02) for r, k in zip(result["ranked"], kennel_ranking, strict=True))


# --- mlflow -------------------------------------------------------------------------------------------------------

MLFLOW = """
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(".")
answer = model.predict(pd.DataFrame({"image": [open(p, "rb").read() for p in photos]}), params={"top_k": 3})
print(json.dumps(answer.to_dict("records")))
"""


@pytest.fixture(scope="module")
def mlflow_model(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mlflow-export") / "model"
    export_model(artifact_dir, "mlflow", out)
    return out


def test_mlflow_model_predicts_like_kennel_without_kennel(
    mlflow_model: Path, photos: list[Path], expected: list, tmp_path: Path
) -> None:
    rows = run_isolated(MLFLOW, mlflow_model, photos, tmp_path)
    assert all(len(row["top"]) == 3 and agree(row["top"], ranking) for row, ranking in zip(rows, expected, strict=True))
    assert [row["label"] for row in rows] == [ranking[0][0] for ranking in expected]
    requirements = (mlflow_model / "requirements.txt").read_text().split()
    assert set(REQUIREMENTS) <= set(requirements) and not any("torch" in r or "kennel" in r for r in requirements)


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(
    mlflow_model: Path, photos: list[Path], expected: list, tmp_path: Path
) -> None:
    import requests

    from kennel.localhost import free_port

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(mlflow_model), "--env-manager", "local"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*command, "-p", str(port)], cwd=tmp_path, env=isolated_env(tmp_path), stdout=log, stderr=log,
        start_new_session=True,  # its own process group: the uvicorn it starts stops with it
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        images = [[base64.b64encode(p.read_bytes()).decode()] for p in photos]
        body = {"dataframe_split": {"columns": ["image"], "data": images}, "params": {"top_k": 3}}
        answer = requests.post(f"{url}/invocations", json=body, timeout=30)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
        log.close()
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert all(len(row["top"]) == 3 and agree(row["top"], ranking) for row, ranking in zip(rows, expected, strict=True))


# --- the handler's preprocessing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [(80, 50), (50, 80), (300, 200), (20, 30), (36, 36), (1001, 333)])
def test_handler_preprocessing_is_torchvisions(interpolation: str, size: tuple[int, int]) -> None:
    from kennel.preprocessing import Preprocessing

    recipe = Preprocessing(32, 36, interpolation, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    theirs = recipe.eval_transform()(image).numpy()
    ours = inference.preprocess(image, recipe.to_dict())
    assert ours.shape == theirs.shape == (3, 32, 32) and ours.dtype == np.float32
    # At most one level of 255 apart (the two round differently), and that seldom.
    assert np.abs(ours - theirs).max() <= 1.01 / 255 / min(recipe.std)
    assert np.abs(ours - theirs).mean() < 1e-3


# --- kennel export ------------------------------------------------------------------------------------------------


def test_every_format_is_registered_and_named_in_help() -> None:
    assert EXPORT_FORMATS.names() == ["mlflow", "onnx", "sagemaker"]
    result = kennel("export", "--help")
    assert result.exit_code == 0 and all(name in result.output for name in EXPORT_FORMATS)


def test_the_command_prints_what_it_wrote(artifact_dir: Path, tmp_path: Path) -> None:
    result = kennel("export", artifact_dir, "--format", "onnx", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"exported {artifact_dir} as onnx to {tmp_path / 'out'}"
    assert lines[1].split()[0] == "model.onnx" and "kB" in lines[1] and "custom_metadata_map" in lines[2]


def test_a_job_folder_names_its_model(artifact_dir: Path, tmp_path: Path) -> None:
    import shutil

    from kennel.jobs import create_job

    job = create_job("export-test", root=tmp_path / "jobs", status="completed")
    shutil.copytree(artifact_dir, job.path / "model")
    result = kennel("export", job.path, "-f", "onnx", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert only_files(tmp_path / "out") == ["model.onnx"]


def error_line(result) -> str:
    """The one line of an expected failure, checked to be only that."""
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_an_unknown_format_lists_the_known_ones(artifact_dir: Path, tmp_path: Path) -> None:
    result = kennel("export", artifact_dir, "--format", "tflite", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown export format 'tflite'" in error_line(result) and "mlflow, onnx, sagemaker" in result.output
    assert not (tmp_path / "out").exists()


def test_a_model_without_onnx_says_how_to_get_one(tmp_path: Path) -> None:
    model = tiny_artifact(tmp_path / "model", ARTIFACT_CLASSES, export_onnx=False)
    result = kennel("export", model, "--format", "sagemaker", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "has no ONNX model" in error_line(result) and "--set export_onnx=true" in result.output


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    result = kennel("export", tmp_path / "nothing", "--format", "onnx", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no model folder" in error_line(result)


def test_an_occupied_out_is_refused_unless_forced(artifact_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = kennel("export", artifact_dir, "--format", "onnx", "--out", out)
    assert refused.exit_code == 2 and "--force" in error_line(refused)
    assert only_files(out) == ["notes.txt"]
    forced = kennel("export", artifact_dir, "--format", "onnx", "--out", out, "--force")
    assert forced.exit_code == 0, forced.output
    assert only_files(out) == ["model.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it


def test_out_may_not_hold_the_model_or_be_a_file(artifact_dir: Path, tmp_path: Path) -> None:
    import shutil

    model = shutil.copytree(artifact_dir, tmp_path / "job" / "model")
    for out in (model, model.parent):
        inside = kennel("export", model, "--format", "onnx", "--out", out, "--force")
        assert inside.exit_code == 2 and "holds the model" in error_line(inside)
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in artifact_dir.iterdir())
    (tmp_path / "file").write_text("")
    a_file = kennel("export", artifact_dir, "--format", "onnx", "--out", tmp_path / "file")
    assert a_file.exit_code == 1 and "is a file" in error_line(a_file)


def test_a_failed_export_leaves_out_as_it_was(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(artifact, path: Path) -> None:
        path.write_bytes(b"half an onnx")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kennel.export.onnx.write_labelled_onnx", half_written)
    with pytest.raises(OSError):
        export_model(artifact_dir, "onnx", tmp_path / "new")
    out = tmp_path / "old"
    out.mkdir()
    (out / "model.onnx").write_text("the last export")
    with pytest.raises(OSError):
        export_model(artifact_dir, "onnx", out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and (out / "model.onnx").read_text() == "the last export"

"""The endpoint client and ``kennel predict --endpoint / --random-from / --out`` against a live HTTP server.

The server is a small stand-in that follows the serving contract (``/ping``, ``/model``, ``/invocations``, the
error body, the static page), run by uvicorn in a thread on a free port, so the client is tested over real HTTP.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from helpers import encode, kennel, tiny_artifact, wait_until
from PIL import Image

from kennel.client import EndpointClient, EndpointError, EndpointUnreachable, content_type
from kennel.localhost import free_port

STATIC = Path(__file__).resolve().parents[1] / "src" / "kennel" / "serve" / "static"
CLASSES = ["Beagle", "Bulldog", "Poodle"]


def stand_in_app():
    """A FastAPI app that answers as the contract says; the breed is picked by the photo's dominant colour."""
    app = FastAPI()

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.get("/ping")
    def ping() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict:
        return {"backbone": "stand-in", "classes": CLASSES, "metrics": {"test_accuracy": 1.0}, "preprocessing": {}}

    @app.post("/invocations")
    async def invocations(request: Request, top_k: int = 5):
        started = time.perf_counter()
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind == "application/json":
            payload = await request.json()
            body, top_k = base64.b64decode(payload["image"]), int(payload.get("top_k", top_k))
        elif kind not in {"image/jpeg", "image/png", "application/x-image"}:
            return error(415, "unsupported_media_type", f"content type {kind!r} is not a photo")
        try:
            image = Image.open(io.BytesIO(body)).convert("RGB")
        except Exception:
            return error(400, "bad_image", "the body is not an image the server can decode")
        red, green, blue = image.resize((1, 1)).getpixel((0, 0))
        winner = max(range(3), key=lambda i: (red, green, blue)[i])
        probabilities = [0.1, 0.1, 0.1]
        probabilities[winner] = 0.8
        ranked = sorted(range(3), key=lambda i: -probabilities[i])[: max(1, top_k)]
        return {
            "predictions": [{"label": CLASSES[i], "probability": probabilities[i], "index": i} for i in ranked],
            "dog": {"is_dog": winner != 2, "score": 0.9 if winner != 2 else 0.2},
            "human_face": {"found": winner == 1, "count": int(winner == 1)},
            "model": {"backbone": "stand-in", "classes": len(CLASSES)},
            "latency_ms": 1000 * (time.perf_counter() - started),
        }

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL and stops it afterwards."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def photo_bytes(color: tuple[int, int, int], fmt: str = "JPEG", size: int = 48) -> bytes:
    return encode(Image.new("RGB", (size, size), color), fmt)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running(stand_in_app()) as url:
        yield url


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """``test/001.Beagle``, ``002.Bulldog``, ``003.Poodle``: two red, green and blue photos each."""
    for i, (name, color) in enumerate(zip(CLASSES, [(250, 0, 0), (0, 250, 0), (0, 0, 250)], strict=True), 1):
        folder = tmp_path / "data" / "test" / f"{i:03d}.{name}"
        folder.mkdir(parents=True)
        for j in range(2):
            (folder / f"{name}_{j}.jpg").write_bytes(photo_bytes(color))
    return tmp_path / "data" / "test"


def test_content_type_is_sniffed_from_the_bytes() -> None:
    assert content_type(photo_bytes((1, 2, 3))) == "image/jpeg"
    assert content_type(photo_bytes((1, 2, 3), "PNG")) == "image/png"
    assert content_type(b"GIF89a...") == "application/x-image"


def test_ping_model_and_predict(endpoint: str, tmp_path: Path) -> None:
    client = EndpointClient(endpoint + "/", timeout=10)
    assert client.ping()
    assert client.model_info()["classes"] == CLASSES
    answer = client.predict(photo_bytes((0, 0, 250), "PNG"), top_k=2)
    assert [p["label"] for p in answer["predictions"]] == ["Poodle", "Beagle"]
    assert answer["dog"] == {"is_dog": False, "score": 0.2}
    path = tmp_path / "rex.jpg"
    path.write_bytes(photo_bytes((250, 0, 0)))
    assert client.predict(path)["predictions"][0]["label"] == "Beagle"
    assert client.predict(str(path), top_k=1)["predictions"] == [{"label": "Beagle", "probability": 0.8, "index": 0}]


def test_server_error_is_raised_with_its_code_and_message(endpoint: str) -> None:
    with pytest.raises(EndpointError) as caught:
        EndpointClient(endpoint).predict(b"this is not a photo")
    assert caught.value.status == 400
    assert caught.value.code == "bad_image"
    assert "not an image" in str(caught.value)


def test_unreachable_endpoint_and_missing_file(tmp_path: Path) -> None:
    client = EndpointClient(f"127.0.0.1:{free_port()}", timeout=2)
    assert client.url.startswith("http://")
    with pytest.raises(EndpointUnreachable, match="cannot reach the endpoint"):
        client.ping()
    with pytest.raises(FileNotFoundError, match="no such file"):
        client.predict(tmp_path / "missing.jpg")


def test_predict_many_keeps_order_and_yields_errors_in_place(endpoint: str) -> None:
    photos = [photo_bytes((250, 0, 0)), b"junk", photo_bytes((0, 250, 0)), photo_bytes((0, 0, 250))] * 3
    answers = list(EndpointClient(endpoint).predict_many(photos, top_k=1, concurrency=4))
    labels = [a if isinstance(a, Exception) else a["predictions"][0]["label"] for a in answers]
    assert labels[0::4] == ["Beagle"] * 3 and labels[2::4] == ["Bulldog"] * 3 and labels[3::4] == ["Poodle"] * 3
    assert all(isinstance(a, EndpointError) and a.code == "bad_image" for a in labels[1::4])


def test_cli_predict_endpoint_one_photo(endpoint: str, tmp_path: Path) -> None:
    path = tmp_path / "rex.png"
    path.write_bytes(photo_bytes((0, 250, 0), "PNG"))
    result = kennel("predict", "--endpoint", endpoint, str(path))
    assert result.exit_code == 0, result.output
    assert "Bulldog" in result.output and "80.0%" in result.output
    assert "dog: yes" in result.output and "human face found: 1" in result.output
    as_json = kennel("predict", "--endpoint", endpoint, str(path), "--json", "-k", "2")
    assert as_json.exit_code == 0, as_json.output
    [row] = json.loads(as_json.stdout)
    assert row["label"] == "Bulldog" and len(row["top"]) == 2 and row["human_face"]["found"] and "dog" in row


def test_cli_random_from_prints_the_true_breed(endpoint: str, dataset: Path) -> None:
    result = kennel("predict", "--endpoint", endpoint, "--random-from", str(dataset), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "true breed:" in result.output and "right" in result.output


def test_cli_batch_transform_writes_csv_with_accuracy(endpoint: str, dataset: Path, tmp_path: Path) -> None:
    (dataset / "003.Poodle" / "notes.jpg").write_text("not a photo")
    out = tmp_path / "predictions.csv"
    result = kennel("predict", "--endpoint", endpoint, str(dataset), "--out", str(out), "--top-k", "2")
    assert result.exit_code == 1, result.output  # one file failed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6
    assert all(r["label"] == r["true_label"] and float(r["probability"]) == 0.8 for r in good)
    assert good[0]["top_labels"].count("|") == 1
    bad = next(r for r in rows if r["error"])
    assert bad["path"].endswith("notes.jpg") and "not an image" in bad["error"]
    assert "6 of 7 photos" in result.output and "accuracy 100.0%" in result.output


def test_cli_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rex.jpg"
    path.write_bytes(photo_bytes((1, 2, 3)))
    result = kennel("predict", "--endpoint", f"http://127.0.0.1:{free_port()}", str(path))
    assert result.exit_code == 1
    assert "cannot reach the endpoint" in result.output


def test_cli_needs_a_model_or_an_endpoint(tmp_path: Path) -> None:
    result = kennel("predict", str(tmp_path))
    assert result.exit_code != 0
    assert "--model" in result.output and "--endpoint" in result.output
    both = kennel("predict", "--endpoint", "http://127.0.0.1:1", "--random-from", str(tmp_path), str(tmp_path))
    assert both.exit_code == 2 and "not both" in both.output


# --- against the real endpoint (kennel.serve.app) on a tiny artifact ---------------------------------------------


@pytest.fixture(scope="module")
def real_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    serving = pytest.importorskip("kennel.serve.app", reason="the serving code (kennel.serve.app) is absent")
    artifact = tiny_artifact(tmp_path_factory.mktemp("artifact") / "model", CLASSES)
    with running(serving.create_app(artifact, serving.ServeSettings(max_wait_ms=5))) as url:
        wait_until(lambda: requests.get(f"{url}/v2/health/ready").ok, "the model loaded")  # it loads after startup
        yield url


def test_client_against_the_real_endpoint(real_endpoint: str) -> None:
    client = EndpointClient(real_endpoint)
    assert client.ping()
    assert client.model_info()["backbone"] == "tiny"
    answer = client.predict(photo_bytes((200, 120, 40)), top_k=2)
    assert {"predictions", "dog", "human_face", "model", "latency_ms"} <= set(answer)
    assert len(answer["predictions"]) == 2 and {p["label"] for p in answer["predictions"]} <= set(CLASSES)
    with pytest.raises(EndpointError) as caught:
        client.predict(b"this is not a photo")
    assert 400 <= caught.value.status < 500 and caught.value.code and caught.value.message
    answers = list(client.predict_many([photo_bytes((i, 0, 0)) for i in range(0, 250, 25)], concurrency=8))
    assert all(isinstance(a, dict) and len(a["predictions"]) == 3 for a in answers)


def test_cli_batch_transform_against_the_real_endpoint(real_endpoint: str, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    result = kennel("predict", "--endpoint", real_endpoint, str(dataset), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and all(r["label"] in CLASSES and r["true_label"] in CLASSES for r in rows)
    assert "6 of 6 photos" in result.output and "accuracy" in result.output


@pytest.mark.slow
def test_demo_serve_step_starts_queries_and_stops_the_endpoint(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil
    from types import SimpleNamespace

    pytest.importorskip("kennel.cli.serve", reason="the serving code (kennel serve) is absent")
    from kennel.cli.demo import DemoRun, step_serve

    root = dataset.parent
    for split in ("train", "valid"):
        shutil.copytree(dataset, root / split)
    run = DemoRun(root, seed=0, overrides={})
    run.record = SimpleNamespace(artifact=tiny_artifact(tmp_path / "artifact" / "model", CLASSES))
    step_serve(run)
    out = capsys.readouterr().out
    assert "kennel serve" in out and "true breed:" in out and "dog:" in out and "endpoint stopped" in out


def test_the_verdict_lines_say_when_no_face_search_ran() -> None:
    from rich.console import Console

    from kennel.cli.output import print_verdicts

    def lines(face: dict) -> str:
        console = Console(record=True, width=120)
        print_verdicts(console, {"dog": {"is_dog": True, "score": 0.9}, "human_face": face})
        return console.export_text()

    assert "not looked for" in lines({"found": False, "count": 0, "searched": False})
    assert "human face found: no" in lines({"found": False, "count": 0})
    assert "human face found: 2" in lines({"found": True, "count": 2})

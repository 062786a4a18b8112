"""The endpoint under production conditions: health while the model loads, overload and timeouts answered with a
503 and Retry-After, clients that leave, offline docs, and a body of two files refused."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import LOOPBACK, asking_meanwhile, encode, wait_until
from PIL import Image
from test_client import running

from kennel.serve import artifact_model, slot
from kennel.serve.app import ServeSettings, create_app

PHOTO = encode(Image.new("RGB", (64, 48), (200, 120, 30)))


def post(client: TestClient, body: bytes = PHOTO):
    return client.post("/invocations", content=body, headers={"content-type": "image/jpeg"})


def batcher_of(app):
    """The batcher of the artifact the app serves now."""
    return app.state.service.slot.current.model.batcher


class Gate:
    """A model call that waits for ``open()``, counting the images it was given."""

    def __init__(self, run_batch) -> None:
        self.run_batch, self.opened, self.entered, self.images = run_batch, threading.Event(), threading.Event(), 0

    def __call__(self, batch: torch.Tensor):
        self.images += len(batch)
        self.entered.set()
        assert self.opened.wait(30), "the test never opened the gate"
        return self.run_batch(batch)

    def open(self) -> None:
        self.opened.set()


@contextmanager
def gated(client: TestClient) -> Iterator[Gate]:
    batcher = batcher_of(client.app)
    working = batcher.run_batch
    gate = batcher.run_batch = Gate(working)
    try:
        yield gate
    finally:
        gate.open()
        batcher.run_batch = working


def test_liveness_at_once_readiness_only_once_the_model_is_warm(artifact_dir: Path, monkeypatch) -> None:
    warming, warmed_sizes = threading.Event(), []

    def slow_warm_up(predictor, sizes):
        warmed_sizes.extend(sizes)
        assert warming.wait(30)

    monkeypatch.setattr(artifact_model, "warm_up", slow_warm_up)
    with TestClient(create_app(artifact_dir, ServeSettings(max_batch_size=8)), base_url=LOOPBACK) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        loading = client.get("/v2/health/ready")
        assert loading.status_code == 503 and loading.json()["ready"] is False
        assert client.get("/ping").status_code == 503  # SageMaker's probe waits too
        with ThreadPoolExecutor(1) as pool:
            early = pool.submit(post, client)  # a request before the model is ready waits for it
            time.sleep(0.2)
            assert not early.done()
            warming.set()
            assert early.result(30).status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/ping").json() == {"status": "ok"}
    assert warmed_sizes == [1, 2, 4, 8]  # every batch size the batcher makes


def test_a_model_that_fails_to_load_fails_liveness_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    with TestClient(create_app(tmp_path / "model"), base_url=LOOPBACK) as client:
        wait_until(lambda: client.get("/v2/health/live").status_code == 503, "liveness failing")
        live = client.get("/v2/health/live").json()
        assert live["live"] is False and "failed to load" in live["reason"]
        refused = post(client)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
        assert "failed to load" in refused.json()["error"]["message"] and refused.headers["retry-after"]


def test_v2_metadata_names_the_model_and_its_shapes(artifact_dir: Path) -> None:
    settings = ServeSettings(model_name="dogs")
    with TestClient(create_app(artifact_dir, settings), base_url=LOOPBACK) as client:
        meta = client.get("/v2/models/dogs").json()
        size = meta["inputs"][0]["shape"][-1]
        assert meta["name"] == "dogs" and meta["inputs"][0]["shape"] == [-1, 3, size, size] and size > 0
        assert meta["outputs"][0]["shape"] == [-1, len(client.get("/model").json()["class_names"])]
        assert client.get("/model").json()["name"] == "dogs"
        wait_until(lambda: client.get("/v2/models/dogs/ready").status_code == 200, "the model ready")
        missing = client.get("/v2/models/cats")
        assert missing.status_code == 404 and "'dogs'" in missing.json()["error"]["message"]
        assert client.get("/v2").json()["name"] == "kennel"


def test_a_job_model_folder_is_named_after_its_job(tmp_path: Path) -> None:
    assert slot.model_name(tmp_path / "20261201-1200-lite0" / "model") == "20261201-1200-lite0"
    assert slot.model_name(tmp_path / "exported") == "exported"


def test_past_max_queue_a_503_with_retry_after_counted_in_metrics(artifact_dir: Path) -> None:
    with TestClient(create_app(artifact_dir, ServeSettings(max_queue=2, max_wait_ms=0)), base_url=LOOPBACK) as client:
        post(client)  # loaded and warm
        with gated(client) as gate, ThreadPoolExecutor(2) as pool:
            held = [pool.submit(post, client) for _ in range(2)]
            wait_until(lambda: "kennel_in_flight 2.0" in client.get("/metrics").text, "two requests in hand")
            refused = post(client)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            gate.open()
            assert [f.result(30).status_code for f in held] == [200, 200]
        assert post(client).status_code == 200  # the queue drained: taken again
        assert 'kennel_errors_total{code="overloaded"} 1.0' in client.get("/metrics").text
        assert 'kennel_requests_total{route="/invocations",status="503"} 1.0' in client.get("/metrics").text


def test_past_the_request_timeout_a_503_and_the_model_never_sees_what_timed_out(artifact_dir: Path) -> None:
    settings = ServeSettings(request_timeout_s=1.0, max_wait_ms=0, max_batch_size=1)
    with TestClient(create_app(artifact_dir, settings), base_url=LOOPBACK) as client:
        post(client)
        with gated(client) as gate, ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, client)
            assert gate.entered.wait(30)
            queued = pool.submit(post, client)  # waits behind the first, in the batcher's queue
            for answer in (first.result(30), queued.result(30)):
                assert answer.status_code == 503 and answer.json()["error"]["code"] == "timeout"
                assert "1 s" in answer.json()["error"]["message"] and answer.headers["retry-after"]
            gate.open()
            wait_until(lambda: batcher_of(client.app).depth == 0, "the queue empty")
        assert gate.images == 1  # only the batch already running when the requests gave up
        assert post(client).status_code == 200


def test_two_files_in_one_upload_are_refused(artifact_dir: Path) -> None:
    with TestClient(create_app(artifact_dir), base_url=LOOPBACK) as client:
        files = [("file", ("a.jpg", PHOTO, "image/jpeg")), ("file", ("b.jpg", PHOTO, "image/jpeg"))]
        refused = client.post("/predict", files=files)
        assert refused.status_code == 400 and "one photo" in refused.json()["error"]["message"]
        assert client.post("/predict", files=files[:1]).status_code == 200


def test_docs_load_their_scripts_from_the_endpoint_not_a_cdn(artifact_dir: Path) -> None:
    with TestClient(create_app(artifact_dir), base_url=LOOPBACK) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert "cdn." not in html and "https://" not in html.split("<body")[0]
            scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
            assert scripts, f"{page} loads no script"
            for script in scripts:
                assert script.startswith("/") and client.get(script).status_code == 200, script


def raw_request(port: int, path: str = "/invocations", body: bytes = PHOTO) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


@pytest.mark.slow
def test_a_request_whose_client_left_is_dropped_before_the_model(artifact_dir: Path) -> None:
    import httpx

    app = create_app(artifact_dir, ServeSettings(max_wait_ms=0, max_batch_size=1))
    with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        wait_until(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, "the model ready")
        batcher = batcher_of(app)
        working = batcher.run_batch
        gate = batcher.run_batch = Gate(working)
        try:
            first = raw_request(port)
            assert gate.entered.wait(30)
            leaving = raw_request(port)  # queued behind the first
            wait_until(lambda: batcher.depth == 1, "the second request queued")
            leaving.close()
            metrics = lambda: httpx.get(f"{url}/metrics").text  # noqa: E731
            wait_until(lambda: 'kennel_errors_total{code="client_gone"} 1.0' in metrics(), "the departure noticed")
            gate.open()
            assert first.recv(12) == b"HTTP/1.1 200"
            first.close()
            wait_until(lambda: batcher.depth == 0, "the queue empty")
        finally:
            gate.open()
            batcher.run_batch = working
    assert gate.images == 1


def test_a_reload_switches_models_while_requests_are_in_flight_and_none_fails(tmp_path: Path) -> None:
    import shutil

    from helpers import tiny_artifact

    folder = tiny_artifact(tmp_path / "model", ["Akita", "Beagle"])
    newer = tiny_artifact(tmp_path / "newer", ["Corgi", "Dingo", "Eskimo"], seed=1)
    with TestClient(create_app(folder, ServeSettings(max_wait_ms=2)), base_url=LOOPBACK) as client:
        assert post(client).status_code == 200
        with asking_meanwhile(lambda: post(client), threads=4) as answers:
            wait_until(lambda: len(answers) >= 8, "requests before the switch")
            shutil.rmtree(folder)
            shutil.copytree(newer, folder)  # a new model in the same place, as a retrained job leaves it
            switched = client.post("/reload")
            assert switched.status_code == 200, switched.text
            before = len(answers)
            wait_until(lambda: len(answers) >= before + 8, "requests after the switch")
        assert [a.status_code for a in answers] == [200] * len(answers)
        labels = [{p["label"] for p in a.json()["predictions"]} for a in answers]
        assert labels[0] <= {"Akita", "Beagle"} and labels[-1] <= {"Corgi", "Dingo", "Eskimo"}
        assert client.get("/model").json()["class_names"] == ["Corgi", "Dingo", "Eskimo"]


def test_requests_waiting_for_a_model_that_then_fails_to_load_are_answered_at_once(tmp_path: Path, monkeypatch) -> None:
    failing, releasing = threading.Event(), threading.Event()

    def broken_warm_up(predictor, sizes):
        failing.set()
        assert releasing.wait(30)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(artifact_model, "warm_up", broken_warm_up)
    settings = ServeSettings(request_timeout_s=600)  # far past the wait below: a waiter left hanging fails it
    with TestClient(create_app(slot_artifact(tmp_path), settings), base_url=LOOPBACK) as client:
        with ThreadPoolExecutor(1) as pool:
            assert failing.wait(30)
            waiting = pool.submit(post, client)  # arrives while the model loads
            time.sleep(0.2)
            releasing.set()
            answer = waiting.result(30)
        assert answer.status_code == 503 and "out of memory" in answer.json()["error"]["message"]


def slot_artifact(tmp_path: Path) -> Path:
    from helpers import tiny_artifact

    return tiny_artifact(tmp_path / "model", ["Akita", "Beagle"])

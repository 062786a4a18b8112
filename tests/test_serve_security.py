"""Security beside the fuzzing: no route serves a file outside the static folder, the token is asked for, kept out
of logs and /metrics and stored privately, names with HTML in them stay text in every report, and no file kennel
reads (model, checkpoint, feature cache, --weights) is unpickled."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from helpers import TINY, encode, kennel, tiny_artifact, use_home, wait_until
from PIL import Image
from test_client import running

from kennel.localhost import free_port
from kennel.serve.app import ServeSettings, create_app

PHOTO = encode(Image.new("RGB", (64, 48), (30, 90, 200)))
HOSTILE = "<img src=x onerror=alert(1)>"  # a class name, as a folder may be called


def raw_get(port: int, target: str) -> bytes:
    """``GET target`` sent byte for byte, as no HTTP library would normalise it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


TRAVERSALS = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/%2E%2E%2Fapp.py",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/%252e%252e/app.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..\\app.py",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/index.html/../../app.py",
    "/docs/../../etc/passwd",
    "/static-offline-docs/../app.py",
    "/static-offline-docs/%2e%2e/core.py",
]


def test_no_route_serves_a_file_outside_the_static_folders(artifact_dir: Path) -> None:
    with running(create_app(artifact_dir)) as url:
        port = int(url.rsplit(":", 1)[1])
        assert raw_get(port, "/static/index.html").startswith(b"HTTP/1.1 200")  # the folder is served
        for target in TRAVERSALS:
            answer = raw_get(port, target)
            status = answer.split(b" ", 2)[1]
            body = answer.split(b"\r\n\r\n", 1)[1]
            assert status != b"200" or b"def create_app" not in body, target
            assert b"root:" not in body and b"[project]" not in body and b"fastapi_offline" not in body, target


def test_the_token_guards_every_route_but_health_the_page_and_the_docs(artifact_dir: Path) -> None:
    from fastapi.testclient import TestClient

    token = "s3cret-token-for-the-test"
    settings = ServeSettings(token=token, max_wait_ms=0)
    with TestClient(create_app(artifact_dir, settings), base_url="http://127.0.0.1:8080") as client:
        wait_until(lambda: client.get("/v2/health/ready").status_code == 200, "the model ready")
        for path in ("/ping", "/v2/health/live", "/v2/health/ready", "/", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        calls = [("POST", "/invocations"), ("POST", "/predict"), ("GET", "/model"), ("GET", "/metrics")]
        calls += [("GET", "/v2/models/model"), ("GET", "/v2")]
        for method, path in calls:
            refused = client.request(method, path, content=PHOTO, headers={"content-type": "image/jpeg"})
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized", path
            assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = {"authorization": "Bearer not-the-token", "content-type": "image/jpeg"}
        assert client.post("/invocations", content=PHOTO, headers=wrong).status_code == 401
        right = {"authorization": f"Bearer {token}", "content-type": "image/jpeg"}
        assert client.post("/invocations", content=PHOTO, headers=right).status_code == 200
        metrics = client.get("/metrics", headers=right).text
        assert 'status="401"' in metrics and token not in metrics


def test_a_loopback_server_answers_only_loopback_host_names(artifact_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(artifact_dir), base_url="http://127.0.0.1:8080") as client:
        assert client.get("/v2/health/live").status_code == 200
        for host in ("localhost:8080", "[::1]:8080", "127.0.0.1"):
            assert client.get("/v2/health/live", headers={"host": host}).status_code == 200, host
        rebound = client.get("/model", headers={"host": "attacker.example:8080"})
        assert rebound.status_code == 421 and "--allowed-host" in rebound.json()["error"]["message"]
        preflight = client.options("/invocations", headers={"origin": "https://a.example"})
        assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    settings = ServeSettings(allowed_hosts=["kennel.lan"], cors_origins=["https://a.example"])
    with TestClient(create_app(artifact_dir, settings), base_url="http://kennel.lan:8080") as client:
        answer = client.get("/v2/health/live", headers={"origin": "https://a.example"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://a.example"


def serve(artifact_dir: Path, home: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "KENNEL_HOME": str(home), "KENNEL_CACHE": str(home / "cache")}
    env.pop("KENNEL_TOKEN", None)
    command = [sys.executable, "-m", "kennel", "serve", str(artifact_dir), "--port", str(port), *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return process.poll() is not None

    wait_until(up, "the server ready", timeout=60, every=0.2)
    assert process.poll() is None, process.communicate()[0]
    return process, url


@pytest.mark.slow
def test_on_another_address_a_token_is_made_printed_once_stored_privately_and_never_logged(
    artifact_dir: Path, tmp_path: Path
) -> None:
    process, url = serve(artifact_dir, tmp_path, "--host", "0.0.0.0")
    guess = "a-wrong-guess-of-the-token"
    try:
        stored = tmp_path / "serve-token"
        token = stored.read_text().strip()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and len(token) >= 32
        photo = {"content-type": "image/jpeg"}
        assert httpx.post(f"{url}/invocations", content=PHOTO, headers=photo).status_code == 401
        assert httpx.post(f"{url}/invocations", content=PHOTO, headers={**photo, "authorization": guess}).is_error
        answer = httpx.post(f"{url}/invocations", content=PHOTO, headers={**photo, "authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        metrics = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"}).text
        assert token not in metrics and guess not in metrics
        refused = kennel("predict", "--endpoint", url, tmp_path / "serve-token")
        assert refused.exit_code == 2 and "--token" in refused.output
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert output.count(token) == 1 and f"stored in {stored}" in output  # printed once, at the start
    assert guess not in output
    process, url = serve(artifact_dir, tmp_path, "--host", "0.0.0.0")  # the stored token is kept
    try:
        headers = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/model", headers=headers).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert token not in output


class Planted:
    """Unpickling this touches a file: the proof that something was unpickled."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> Path:
    evil = Planted()
    evil.marker = marker
    with path.open("wb") as handle:
        pickle.dump({"state_dict": evil}, handle, protocol=2)
    return path


def test_nothing_kennel_reads_is_unpickled(tmp_path: Path, artifact_dir: Path) -> None:
    import shutil

    from kennel.artifact import load_artifact
    from kennel.features import Features
    from kennel.models.weights import WeightsUnavailable, load_weights_file
    from kennel.observers.checkpoint import load_checkpoint

    marker = tmp_path / "unpickled"
    with pytest.raises(WeightsUnavailable):
        load_weights_file(plant(tmp_path / "weights.pth", marker))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(plant(tmp_path / "last.pt", marker))
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type: anything but running the pickle
        Features.load(plant(tmp_path / "features.safetensors", marker))
    model = shutil.copytree(artifact_dir, tmp_path / "model")
    for weights in model.glob("*.safetensors"):
        plant(weights, marker)
    with pytest.raises(Exception):  # noqa: B017
        load_artifact(model)
    assert not marker.exists()
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")  # what is allowed still loads
    assert set(load_checkpoint(tmp_path / "plain.pt")) == {"weight"}


def test_class_names_with_html_stay_text_in_every_report(tmp_path: Path, monkeypatch) -> None:
    from kennel.data.sample import write_sample_dataset

    use_home(monkeypatch, tmp_path / "home")
    data = write_sample_dataset(tmp_path / "data", num_classes=2, per_split=(6, 3, 3))
    for split in ("train", "valid", "test"):
        first = sorted((data / split).iterdir())[0]
        first.rename(first.with_name(f"001.{HOSTILE}"))
    overrides = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    trained = kennel("train", "--data", data, "--name", "hostile", *overrides)
    assert trained.exit_code in (0, 3), trained.output
    for command in (("report", "hostile"), ("debug", "hostile"), ("profile", "hostile")):
        assert kennel(*command).exit_code == 0, command
    pages = list((tmp_path / "home").rglob("*.html"))
    assert pages
    shown = 0
    for page in pages:
        html = page.read_text()
        assert HOSTILE not in html, page
        shown += "&lt;img src=x onerror=alert(1)&gt;" in html
    assert shown, "the class name appears escaped in no page"


def test_a_served_artifact_with_html_class_names_answers_them_as_json_text(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    classes = [HOSTILE, 'Tom & "Jerry"', "Pug"]
    artifact = tiny_artifact(tmp_path / "model", classes)
    with TestClient(create_app(artifact), base_url="http://127.0.0.1:8080") as client:
        answer = client.post("/invocations", content=PHOTO, headers={"content-type": "image/jpeg"})
        assert answer.headers["content-type"] == "application/json"
        assert {p["label"] for p in answer.json()["predictions"]} <= set(classes)
        assert client.get("/model").json()["class_names"] == classes

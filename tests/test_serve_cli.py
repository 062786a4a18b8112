"""``kennel serve``: a real uvicorn process on a tiny artifact answers, then shuts down cleanly on SIGTERM."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from helpers import ARTIFACT_CLASSES, encode, kennel, wait_until
from PIL import Image

from kennel.localhost import free_port


def test_help_and_a_missing_model() -> None:
    result = kennel("serve", "--help")
    assert result.exit_code == 0 and "--max-batch-size" in result.output and "--max-body-mb" in result.output
    result = kennel("serve", "/no/such/model")
    assert result.exit_code == 2 and "no model folder" in result.output


def start_server(artifact_dir: Path, *flags: object) -> tuple[subprocess.Popen, str]:
    """``kennel serve`` on a free port, once it answers /ping (its model loaded and warm)."""
    port = free_port()
    command = [sys.executable, "-m", "kennel", "serve", str(artifact_dir), "--port", str(port), *map(str, flags)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the server did not answer /ping: {process.communicate()[0][-2000:]}")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal once shut down
    return output


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.slow
def test_serves_and_shuts_down_gracefully_with_every_request_in_flight_answered(artifact_dir: Path) -> None:
    process, url = start_server(artifact_dir, "--max-wait-ms", 2000)  # the 30 requests wait together
    try:
        photo = encode(Image.new("RGB", (64, 48), (10, 200, 30)))
        response = httpx.post(f"{url}/invocations", content=photo, headers={"content-type": "image/jpeg"})
        assert response.status_code == 200
        assert response.json()["model"] == {"backbone": "tiny", "classes": len(ARTIFACT_CLASSES)}
        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(photo)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(30)]
        for sock in sockets:
            sock.sendall(head + photo)
        in_hand = lambda: "kennel_in_flight 30.0" in httpx.get(f"{url}/metrics").text  # noqa: E731
        wait_until(in_hand, "30 requests in hand")
    finally:
        output = stop(process)  # a probe's SIGTERM, while the 30 wait for their batch
    answers = [read_answer(sock) for sock in sockets]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 30, output
    assert "Application shutdown complete" in output


def oversize_statuses(url: str, body: bytes) -> dict[str, tuple[int, str]]:
    """The status and error code of a too-large POST, as each common client reads it."""
    import json
    import urllib.error
    import urllib.request

    import requests

    target, headers = f"{url}/invocations", {"Content-Type": "image/jpeg"}
    seen = {}
    try:
        urllib.request.urlopen(urllib.request.Request(target, data=body, headers=headers), timeout=30)
    except urllib.error.HTTPError as refused:
        seen["urllib"] = (refused.code, json.loads(refused.read())["error"]["code"])
    answer = requests.post(target, data=body, headers=headers, timeout=30)
    seen["requests"] = (answer.status_code, answer.json()["error"]["code"])
    chunked = requests.post(target, data=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]), timeout=30)
    seen["requests, chunked"] = (chunked.status_code, chunked.json()["error"]["code"])
    answer = httpx.post(target, content=body, headers=headers, timeout=30)
    seen["httpx"] = (answer.status_code, answer.json()["error"]["code"])
    if shutil.which("curl"):
        with tempfile.NamedTemporaryFile(suffix=".jpg") as file:
            file.write(body)
            file.flush()
            curl = ["curl", "-sS", "-H", "Content-Type: image/jpeg", "--data-binary", f"@{file.name}", target]
            done = subprocess.run([*curl, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=60)
            text, status = done.stdout.rsplit("\n", 1)
            seen["curl"] = (int(status), json.loads(text)["error"]["code"])
    return seen


@pytest.mark.slow
def test_limits_every_client_reads_and_slow_headers_timed_out(artifact_dir: Path) -> None:
    process, url = start_server(artifact_dir, "--max-body-mb", 1, "--header-timeout", 1)
    try:
        seen = oversize_statuses(url, b"\xff" * 7_000_000)  # 7 MB, through each client
        assert seen and set(seen.values()) == {(413, "body_too_large")}, seen
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
            assert httpx.get(f"{url}/ping").status_code == 200  # others are served meanwhile
            assert read_answer(slow).startswith(b"HTTP/1.1 408")
    finally:
        stop(process)


def test_a_backend_or_precision_the_model_cannot_run_fails_before_the_server_starts(artifact_dir: Path) -> None:
    result = kennel("serve", artifact_dir, "--precision", "int8")
    assert result.exit_code == 2 and "serving" not in result.output
    assert "onnxruntime-int8: no int8 ONNX file (train with --precision int8 to add one)" in result.output
    result = kennel("serve", artifact_dir, "--engine", "tensorrt")
    assert result.exit_code == 2 and "unknown inference backend 'tensorrt'" in result.output


def test_a_port_in_use_fails_in_one_line_before_the_model_loads(artifact_dir: Path, monkeypatch) -> None:
    from kennel.predictor import Predictor

    def load(*args, **kwargs):
        raise AssertionError("the model loaded before the port was checked")

    monkeypatch.setattr(Predictor, "load", load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kennel("serve", artifact_dir, "--port", port)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use by another process; choose another with --port"
    ]


def test_a_bad_setting_names_its_flag(artifact_dir: Path) -> None:
    result = kennel("serve", artifact_dir, "--faces", "sometimes")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --faces: Input should be 'not-dog', 'always' or 'off' (got 'sometimes'")


@pytest.mark.slow
def test_sighup_loads_the_model_again_and_the_switch_is_logged(tmp_path: Path) -> None:
    from helpers import tiny_artifact

    folder = tiny_artifact(tmp_path / "model", ["Akita", "Beagle"])
    process, url = start_server(folder)
    try:
        assert httpx.get(f"{url}/model").json()["class_names"] == ["Akita", "Beagle"]
        shutil.rmtree(folder)
        tiny_artifact(folder, ["Corgi", "Dingo", "Eskimo"], seed=1)  # retrained in place
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{url}/model").json()["class_names"] == ["Corgi", "Dingo", "Eskimo"], "switch")
    finally:
        output = stop(process)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO switched to \S+ from \S+/model ", output, re.M), output


def test_a_capture_folder_that_cannot_be_made_fails_in_one_line_before_the_model_loads(artifact_dir: Path) -> None:
    result = kennel("serve", artifact_dir, "--capture", "/proc/no-such-place/capture")
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "--capture: cannot make the folder" in line

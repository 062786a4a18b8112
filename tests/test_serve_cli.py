"""``kennel serve``: a real uvicorn process on a tiny artifact answers, then shuts down cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import ARTIFACT_CLASSES, encode, kennel
from PIL import Image

from kennel.localhost import free_port


def test_help_and_a_missing_model() -> None:
    result = kennel("serve", "--help")
    assert result.exit_code == 0 and "--max-batch-size" in result.output and "--max-body-mb" in result.output
    result = kennel("serve", "/no/such/model")
    assert result.exit_code == 2 and "no model folder" in result.output


@pytest.mark.slow
def test_serves_and_shuts_down_gracefully(artifact_dir: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "kennel", "serve", str(artifact_dir), "--port", str(port), "--max-body-mb", "0.1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not answer /ping")
        photo = encode(Image.new("RGB", (64, 48), (10, 200, 30)))
        response = httpx.post(f"{url}/invocations", content=photo, headers={"content-type": "image/jpeg"})
        assert response.status_code == 200
        assert response.json()["model"] == {"backbone": "tiny", "classes": len(ARTIFACT_CLASSES)}
        too_large = httpx.post(f"{url}/invocations", content=b"x" * 200_000, headers={"content-type": "image/jpeg"})
        assert too_large.status_code == 413
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal once shut down
    assert "Application shutdown complete" in output


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

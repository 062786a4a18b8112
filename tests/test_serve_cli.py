"""``kennel serve``: a real uvicorn process on a tiny artifact answers, then shuts down cleanly on SIGTERM."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kennel.artifact import save_artifact
from kennel.cli import _register, app
from kennel.models import create_model, get_backbone


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("tiny", 3, pretrained=False)
    return save_artifact(model, ["a", "b", "c"], get_backbone("tiny").preprocessing, tmp_path_factory.mktemp("a") / "m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_and_a_missing_model() -> None:
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--max-batch-size" in result.output and "--max-body-mb" in result.output
    result = runner.invoke(app, ["serve", "/no/such/model"])
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
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "JPEG")
        response = httpx.post(f"{url}/invocations", content=buffer.getvalue(), headers={"content-type": "image/jpeg"})
        assert response.status_code == 200 and response.json()["model"] == {"backbone": "tiny", "classes": 3}
        too_large = httpx.post(f"{url}/invocations", content=b"x" * 200_000, headers={"content-type": "image/jpeg"})
        assert too_large.status_code == 413
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal once shut down
    assert "Application shutdown complete" in output


def test_a_backend_or_precision_the_model_cannot_run_fails_before_the_server_starts(artifact_dir: Path) -> None:
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(artifact_dir), "--precision", "int8"])
    assert result.exit_code == 2 and "serving" not in result.output
    assert "onnxruntime-int8: no int8 ONNX file (train with --precision int8 to add one)" in result.output
    result = runner.invoke(app, ["serve", str(artifact_dir), "--engine", "tensorrt"])
    assert result.exit_code == 2 and "unknown inference backend 'tensorrt'" in result.output

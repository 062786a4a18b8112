"""The files of a model artifact, by name: shared by :mod:`kennel.artifact`, which writes and loads them with
PyTorch, and the readers that need no PyTorch (a report's gallery reads the head's weights and the ONNX file)."""

from __future__ import annotations

from pathlib import Path

INFO_FILE = "artifact.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def is_artifact(folder: Path | str) -> bool:
    return (Path(folder) / INFO_FILE).is_file()

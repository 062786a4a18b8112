"""The model artifact: one folder with everything needed to predict, and nothing that needs unpickling.

::

    artifact.json       format version, backbone, classes, preprocessing, metrics, ONNX details
    model.safetensors   the whole Classifier state dict (features, head, the frozen ImageNet head)
    model.onnx          optional: fp32, dynamic batch; input ``image``, outputs ``logits`` (+ ``imagenet_logits``)
    model.int8.onnx     optional: the same, static int8, calibrated on the job's training photos

Training writes it, evaluation and serving read it; the preprocessing is stored once, here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kennel.artifact_files import INFO_FILE, INT8_FILE, ONNX_FILE, WEIGHTS_FILE
from kennel.artifact_files import is_artifact as is_artifact  # where callers have long imported it
from kennel.atomic import atomic_write_json, swap_folder_into_place
from kennel.errors import KennelError
from kennel.inference.export import OnnxExportError as OnnxExportError  # raised by save_artifact
from kennel.inference.export import export_onnx, quantize_int8
from kennel.inference.graph import Calibration, classifier_outputs
from kennel.jobs import now
from kennel.models import Classifier
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ArtifactError(KennelError, ValueError):
    """A folder that is not a usable model artifact; the message names the folder and what is wrong."""


@dataclass
class ArtifactInfo:
    """The contents of ``artifact.json``."""

    backbone: str
    num_classes: int
    class_names: list[str]
    preprocessing: dict[str, Any]
    feature_dim: int
    has_imagenet_head: bool
    class_folders: list[str] | None = None
    tta: str = "none"  # test-time augmentation inside the model (kennel.models.classifier.TTA)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now)
    onnx: dict[str, Any] | None = None  # file, opset, inputs, outputs, export_s, max_abs_diff, verified_batch
    onnx_int8: dict[str, Any] | None = None  # file, quantize_s, method; present when the job ran int8
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Artifact:
    """A loaded artifact: the model in eval mode on the CPU, its description and its preprocessing."""

    path: Path
    info: ArtifactInfo
    preprocessing: Preprocessing
    model: Classifier | None = None  # None when loaded with ``with_model=False``

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    @property
    def onnx_path(self) -> Path | None:
        path = self.path / ONNX_FILE
        return path if self.info.onnx and path.is_file() else None

    @property
    def onnx_files(self) -> dict[str, Path]:
        """The ONNX files the engine can run, by precision."""
        files = {"fp32": self.onnx_path}
        int8 = self.path / INT8_FILE
        files["int8"] = int8 if self.info.onnx_int8 and int8.is_file() else None
        return {precision: path for precision, path in files.items() if path is not None}


# --- saving ------------------------------------------------------------------------------------------------------


def save_artifact(
    model: Classifier,
    class_names: list[str],
    preprocessing: Preprocessing,
    out_dir: Path | str,
    metrics: dict[str, Any] | None = None,
    class_folders: list[str] | None = None,
    export_onnx: bool = True,
    int8_calibration: Calibration | None = None,
) -> Path:
    """Write the artifact of ``model`` to ``out_dir`` and return that path.

    The folder is built beside ``out_dir`` and renamed into place, so a reader (a server, a concurrent
    ``kennel predict``) sees the old artifact or the new one, never a half-written one. With ``export_onnx``
    the ONNX file is verified against PyTorch; a mismatch raises :class:`OnnxExportError` and leaves
    ``out_dir`` untouched. ``int8_calibration`` adds the static int8 model, calibrated on its batches.
    """
    model = unwrap(model)
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    out_dir = Path(out_dir).expanduser()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{token}"
    tmp.mkdir()
    try:
        cpu_model = _clean_copy(model)
        _save_weights(cpu_model, tmp / WEIGHTS_FILE)
        info = ArtifactInfo(
            backbone=model.backbone,
            num_classes=model.num_classes,
            class_names=list(class_names),
            preprocessing=preprocessing.to_dict(),
            feature_dim=model.feature_dim,
            has_imagenet_head=model.imagenet_head is not None,
            tta=model.tta,
            class_folders=list(class_folders) if class_folders is not None else None,
            metrics=dict(metrics or {}),
        )
        if export_onnx:
            info.onnx = export_onnx_file(cpu_model, preprocessing.input_size, tmp / ONNX_FILE)
            if int8_calibration is not None:
                info.onnx_int8 = quantize_onnx_file(tmp / ONNX_FILE, tmp / INT8_FILE, int8_calibration)
        atomic_write_json(tmp / INFO_FILE, asdict(info))
        _make_readable(tmp)
        swap_folder_into_place(tmp, out_dir, token)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved model artifact %s", out_dir)
    return out_dir


def unwrap(model: nn.Module) -> Classifier:
    """The Classifier inside a ``torch.compile`` or DDP wrapper."""
    while not isinstance(model, Classifier):
        inner = next((m for m in (getattr(model, a, None) for a in ("_orig_mod", "module")) if m is not None), None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected a kennel Classifier, got {type(model).__name__}")
        model = inner
    return model


def _clean_copy(model: Classifier) -> Classifier:
    """The same weights in a freshly built CPU model in eval mode: no hooks (a debugger's), no wrappers, and
    proof that :func:`load_artifact` can rebuild it. Cheaper and safer than ``copy.deepcopy``."""
    from kennel.models import create_model

    clean = create_model(model.backbone, model.num_classes, pretrained=False).use_tta(model.tta)
    if model.imagenet_head is None:
        clean.imagenet_head = None
    clean.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, strict=True)
    return clean.eval()


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(path), metadata={"format": "pt", "kennel_backbone": str(model.backbone)})
    except SafetensorError as exc:
        # safetensors reports a failed write ("I/O error: No space left on device (os error 28)") as its own
        # error; it is an OSError, so a caller can tell a full disk from a model it cannot save.
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from exc


def _make_readable(folder: Path) -> None:
    """Temporary files are private (0600); an artifact is read by servers, perhaps as another user."""
    for path in folder.iterdir():
        path.chmod(0o644)


def export_onnx_file(model: Classifier, input_size: int, path: Path) -> dict[str, Any]:
    """Export ``model`` (CPU, eval) to ``path`` as one self-contained fp32 file, checked with ONNX Runtime against
    PyTorch, and return what ``artifact.json`` records about it."""
    outputs = ["logits", "imagenet_logits"] if model.imagenet_head is not None else ["logits"]
    details = export_onnx(classifier_outputs(model), input_size, path, outputs, model.backbone)
    return {"file": path.name, **details}


def quantize_onnx_file(fp32: Path, path: Path, calibration: Calibration) -> dict[str, Any]:
    """The int8 model beside the fp32 one, calibrated on ``calibration`` (the job's own training photos)."""
    return {"file": path.name, **quantize_int8(fp32, path, calibration())}


# --- loading -----------------------------------------------------------------------------------------------------


def read_info(folder: Path | str) -> ArtifactInfo:
    """``artifact.json`` of ``folder``, checked; raises :class:`ArtifactError` naming what is missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ArtifactError(f"model folder {folder} does not exist")
    path = folder / INFO_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a kennel model artifact: {INFO_FILE} is missing")
    try:
        data = json.loads(path.read_text())
        info = ArtifactInfo.from_dict(data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a valid artifact description: {exc}") from exc
    if info.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder} has artifact format {info.format_version}; this kennel reads up to {FORMAT_VERSION} "
            "(upgrade kennel)"
        )
    return info


def load_artifact(folder: Path | str, with_model: bool = True) -> Artifact:
    """Read an artifact. The model is rebuilt from its backbone name (no pretrained download) and the
    safetensors weights load with ``strict=True``; nothing is unpickled. ``with_model=False`` skips the
    model (an ONNX-only consumer needs just the description)."""
    folder = Path(folder).expanduser()
    info = read_info(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{folder} is not a complete kennel model artifact: {WEIGHTS_FILE} is missing")
    preprocessing = Preprocessing.from_dict(info.preprocessing)
    model = _load_model(info, weights) if with_model else None
    return Artifact(path=folder, info=info, preprocessing=preprocessing, model=model)


def _load_model(info: ArtifactInfo, weights: Path) -> Classifier:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kennel.models import create_model

    model = create_model(info.backbone, info.num_classes, pretrained=False).use_tta(info.tta)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"cannot read {weights}: {exc}") from exc
    if (model.imagenet_head is not None) and not info.has_imagenet_head:
        model.imagenet_head = None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights} does not fit backbone {info.backbone}: {str(exc)[:500]}") from exc
    return model.eval()

"""``--format sagemaker``: ``model.tar.gz`` as SageMaker's PyTorch serving container expects it. The model at the
root, ``code/inference.py`` with ``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn``, and
``code/requirements.txt``, which the container pip-installs before it imports the handler.

The handler runs the labelled ONNX model (:mod:`kennel.export.onnx`) with ONNX Runtime, so the container needs
neither kennel (not on PyPI) nor this model's PyTorch code."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.export.formats import EXPORT_FORMATS, ExportFormat
from kennel.export.onnx import write_labelled_onnx

if TYPE_CHECKING:
    from kennel.artifact import Artifact

TARBALL = "model.tar.gz"


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owned by nobody in particular and readable by all: the container unpacks it as its own user."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = 0o755 if member.isdir() else 0o644
    return member


def write_tarball(artifact: Artifact, path: Path) -> None:
    from kennel.export.standalone import INFERENCE, REQUIREMENTS
    from kennel.export.standalone.inference import MODEL_FILE

    with tempfile.TemporaryDirectory(prefix="kennel-sagemaker-") as scratch:
        model = Path(scratch) / MODEL_FILE
        write_labelled_onnx(artifact, model)
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text("".join(f"{line}\n" for line in REQUIREMENTS))
        with tarfile.open(path, "w:gz") as tar:
            tar.add(model, MODEL_FILE, filter=_plain)
            tar.add(INFERENCE, "code/inference.py", filter=_plain)
            tar.add(requirements, "code/requirements.txt", filter=_plain)


def _write(artifact: Artifact, folder: Path) -> None:
    write_tarball(artifact, folder / TARBALL)


EXPORT_FORMATS.register(
    "sagemaker",
    ExportFormat(
        _write,
        summary="model.tar.gz for SageMaker's PyTorch serving container: model.onnx, code/inference.py, "
        "code/requirements.txt",
        usage="upload {out}/model.tar.gz to S3 and deploy it on a PyTorch inference image (it runs "
        'code/inference.py); requests: a photo\'s bytes (image/jpeg, image/png) or JSON {{"image": base64}}',
    ),
)

"""``--format onnx``: the artifact's ONNX model, carrying what using it takes as metadata (``metadata_props``):
``labels`` (a JSON list, in the order of the ``logits`` output), ``preprocessing`` (JSON: resize_size, input_size,
interpolation, mean, std), ``backbone`` and ``kennel_version``. The sagemaker and mlflow exports ship this file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.export.formats import EXPORT_FORMATS, ExportFormat

if TYPE_CHECKING:
    from kennel.artifact import Artifact


def onnx_metadata(artifact: Artifact) -> dict[str, str]:
    """The metadata entries of an exported model, by key."""
    from kennel import __version__
    from kennel.export.standalone import inference

    return {
        inference.LABELS_KEY: json.dumps(artifact.class_names),
        inference.PREPROCESSING_KEY: json.dumps(artifact.preprocessing.to_dict()),
        inference.BACKBONE_KEY: artifact.info.backbone,
        inference.VERSION_KEY: __version__,
    }


def write_labelled_onnx(artifact: Artifact, path: Path) -> None:
    """The artifact's fp32 ONNX model at ``path`` with :func:`onnx_metadata`; metadata it had under other keys
    is kept."""
    import onnx
    from onnx.helper import set_model_props

    model = onnx.load(str(artifact.onnx_path))
    props = {entry.key: entry.value for entry in model.metadata_props}
    set_model_props(model, {**props, **onnx_metadata(artifact)})
    onnx.save(model, str(path))


def _write(artifact: Artifact, folder: Path) -> None:
    from kennel.export.standalone.inference import MODEL_FILE

    write_labelled_onnx(artifact, folder / MODEL_FILE)


EXPORT_FORMATS.register(
    "onnx",
    ExportFormat(
        _write,
        summary="model.onnx with its labels, preprocessing, backbone and kennel version as metadata",
        usage="labels and preprocessing: onnxruntime.InferenceSession('{out}/model.onnx')"
        ".get_modelmeta().custom_metadata_map",
    ),
)

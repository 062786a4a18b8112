"""An image classifier exported by kennel: its ONNX model, run with ONNX Runtime, Pillow and NumPy alone.

The model file carries what prediction needs as ONNX metadata: ``labels`` (a JSON list of class names, in the order
of the ``logits`` output), ``preprocessing`` (JSON: ``resize_size``, ``input_size``, ``interpolation``, ``mean``,
``std``), ``backbone`` and ``kennel_version``. A photo is prepared the way kennel prepares it: the short side
resized to ``resize_size``, the centre ``input_size`` square cropped, scaled to [0, 1] and normalised.

SageMaker's PyTorch serving container calls :func:`model_fn`, :func:`input_fn`, :func:`predict_fn` and
:func:`output_fn` (this file is ``code/inference.py`` of the model.tar.gz); an MLflow model wraps
:class:`OnnxClassifier`. Requests are a photo's bytes (``image/jpeg``, ``image/png``, ``application/x-image``,
...) or JSON ``{"image": BASE64, "top_k": K}``; the answer is JSON
``{"predictions": [{"label", "probability", "index"}, ...], "model": {"backbone", "classes"}}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

MODEL_FILE = "model.onnx"
LOGITS = "logits"
DEFAULT_TOP_K = 5
JSON_TYPE = "application/json"
# Metadata keys of the ONNX model.
LABELS_KEY = "labels"
PREPROCESSING_KEY = "preprocessing"
BACKBONE_KEY = "backbone"
VERSION_KEY = "kennel_version"

_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


# kennel.data.images.to_rgb, copied: this file runs where kennel is not installed.
def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, CMYK, palette, alpha, 16-bit) to RGB, as kennel converts photos: transparency on white,
    16-bit grayscale scaled rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def resize_nearest(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, C]`` pixels to ``size`` (width, height) as torch's ``nearest`` resizes (what torchvision runs on
    tensors): source index ``floor(i * in / out)`` in float32. Pillow's NEAREST samples pixel centres instead and
    picks other pixels."""

    def indices(source: int, target: int) -> np.ndarray:
        scale = np.float32(source / target)
        return np.minimum(np.floor(np.arange(target, dtype=np.float32) * scale).astype(np.int64), source - 1)

    return pixels[indices(pixels.shape[0], size[1])][:, indices(pixels.shape[1], size[0])]


def preprocess(image: Image.Image, preprocessing: dict[str, Any]) -> np.ndarray:
    """An RGB image to the ``[3, S, S]`` float32 array a model with ``preprocessing`` takes, computed as
    torchvision's Resize(short side) + CenterCrop + Normalize compute it: the same sizes and offsets."""
    resize, crop = int(preprocessing["resize_size"]), int(preprocessing["input_size"])
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    interpolation = preprocessing.get("interpolation", "bilinear")
    if interpolation == "nearest":
        pixels = resize_nearest(np.asarray(image), size)
    else:
        pixels = np.asarray(image.resize(size, _RESAMPLING[interpolation]) if size != image.size else image)
    left, top = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
    pixels = pixels[top : top + crop, left : left + crop].astype(np.float32) / 255.0
    mean = np.asarray(preprocessing["mean"], dtype=np.float32)
    std = np.asarray(preprocessing["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


class OnnxClassifier:
    """The exported model with its labels and preprocessing, read from the ONNX file's metadata."""

    def __init__(self, path: str) -> None:
        import onnxruntime

        if os.path.isdir(path):
            path = os.path.join(path, MODEL_FILE)
        # The GPU when this onnxruntime has one (onnxruntime-gpu), else the CPU; never an accelerator that would
        # compile the model first (TensorRT) and make the first request wait minutes.
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = onnxruntime.InferenceSession(path, providers=providers)
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in (LABELS_KEY, PREPROCESSING_KEY) if key not in metadata]
        if missing:
            raise ValueError(f"{path} is not a kennel export: its metadata lacks {', '.join(missing)}")
        self.labels: list[str] = json.loads(metadata[LABELS_KEY])
        self.preprocessing: dict[str, Any] = json.loads(metadata[PREPROCESSING_KEY])
        interpolation = self.preprocessing.get("interpolation", "bilinear")
        if interpolation != "nearest" and interpolation not in _RESAMPLING:
            raise ValueError(f"{path}: unknown interpolation {interpolation!r} in its preprocessing")
        self.backbone = metadata.get(BACKBONE_KEY, "")
        self.kennel_version = metadata.get(VERSION_KEY, "")
        self.input_name = self.session.get_inputs()[0].name
        outputs = [output.name for output in self.session.get_outputs()]
        self.output_name = LOGITS if LOGITS in outputs else outputs[0]

    def open(self, data: bytes) -> Image.Image:
        """A photo's bytes to an RGB image; a JPEG decodes at a reduced scale that keeps the short side at least
        ``resize_size`` (much faster for large photos, and what kennel does)."""
        if not data:
            raise ValueError("the request has no image: send the photo's bytes")
        try:
            image = Image.open(io.BytesIO(data))
            if image.format == "JPEG":
                size = int(self.preprocessing["resize_size"])
                image.draft("RGB", (size, size))
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"cannot decode the image: {exc}") from exc
        return to_rgb(image)

    def logits(self, images: Sequence[bytes | Image.Image]) -> np.ndarray:
        """The class logits ``[N, classes]`` of photos (bytes or PIL images)."""
        opened = [to_rgb(image) if isinstance(image, Image.Image) else self.open(image) for image in images]
        batch = np.stack([preprocess(image, self.preprocessing) for image in opened]).astype(np.float32)
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def predict(self, images: Sequence[bytes | Image.Image], top_k: int = DEFAULT_TOP_K) -> list[list[dict[str, Any]]]:
        """The ``top_k`` most probable classes of each photo, most probable first."""
        logits = self.logits(images).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = exp / exp.sum(axis=1, keepdims=True)
        k = max(1, min(int(top_k), len(self.labels)))
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            [{"label": self.labels[i], "probability": float(probabilities[n, i]), "index": int(i)} for i in order]
            for n, order in enumerate(ranked)
        ]


# --- SageMaker's handler functions --------------------------------------------------------------------------------


def model_fn(model_dir: str) -> OnnxClassifier:
    """The model in ``model_dir`` (the unpacked model.tar.gz)."""
    return OnnxClassifier(model_dir)


def _top_k(value: Any) -> int:
    if value is None:
        return DEFAULT_TOP_K
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"top_k must be a whole number of at least 1, got {value!r}")
    return value


def input_fn(request_body: bytes | str, request_content_type: str) -> tuple[bytes, int]:
    """A request to the photo's bytes and how many classes to answer with."""
    kind = (request_content_type or "").split(";", 1)[0].strip().lower()
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body)
    if kind != JSON_TYPE:
        if kind and not (kind.startswith("image/") or kind in ("application/x-image", "application/octet-stream")):
            raise ValueError(f"content type {kind!r} is not accepted: send an image/* body or {JSON_TYPE}")
        return body, DEFAULT_TOP_K
    try:
        request = json.loads(body)
        image = base64.b64decode(request["image"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f'a JSON request is {{"image": BASE64, "top_k": K}}: {exc}') from exc
    return image, _top_k(request.get("top_k"))


def predict_fn(data: tuple[bytes, int], model: OnnxClassifier) -> dict[str, Any]:
    image, top_k = data
    (predictions,) = model.predict([image], top_k)
    return {"predictions": predictions, "model": {"backbone": model.backbone, "classes": len(model.labels)}}


def output_fn(prediction: dict[str, Any], accept: str = JSON_TYPE) -> tuple[str, str]:
    """JSON, the only answer type, as ``(body, content type)``."""
    kind = (accept or JSON_TYPE).split(";", 1)[0].strip().lower()
    if kind not in (JSON_TYPE, "*/*", "application/*"):
        raise ValueError(f"accept {kind!r} is not offered; use {JSON_TYPE}")
    return json.dumps(prediction), JSON_TYPE

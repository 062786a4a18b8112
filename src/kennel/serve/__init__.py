"""The HTTP endpoint (``kennel serve``) and the SageMaker handler functions, on one plain-Python core.

:class:`Endpoint` holds what both share: the predictor, the dog and face verdicts and the response shape. It
knows nothing of HTTP; :mod:`kennel.serve.app` puts FastAPI around it and :mod:`kennel.serve.sagemaker` the
SageMaker inference-toolkit functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image

from kennel.predictor import Outputs, Predictor
from kennel.serve.inputs import InputError, parse_top_k, read_body
from kennel.serve.verdicts import FaceDetector, dog_verdict

__all__ = ["Endpoint", "EndpointOptions", "InputError", "Prepared"]


@dataclass(frozen=True)
class EndpointOptions:
    max_pixels: int = 50_000_000
    top_k: int = 5
    dog_threshold: float = 0.5
    detect_faces: bool = True


class Prepared(NamedTuple):
    """One request ready for the model: the input tensor ``[3, S, S]``, its top-k and the face verdict."""

    tensor: torch.Tensor
    top_k: int
    human_face: dict[str, Any]


class Endpoint:
    """Request bytes in, response dict out; the model call in between is the caller's (direct or batched)."""

    def __init__(self, predictor: Predictor, options: EndpointOptions | None = None) -> None:
        self.predictor = predictor
        self.options = options or EndpointOptions()
        self.faces = FaceDetector(self.options.detect_faces)
        self.class_index = {name: i for i, name in enumerate(predictor.class_names)}

    @classmethod
    def load(cls, artifact_dir: Path | str, runtime: str = "auto", options: EndpointOptions | None = None):
        return cls(Predictor.load(artifact_dir, runtime=runtime), options)

    def model_info(self) -> dict[str, Any]:
        info = self.predictor.artifact.info
        return {
            "backbone": info.backbone,
            "classes": len(info.class_names),
            "class_names": list(info.class_names),
            "has_imagenet_head": info.has_imagenet_head,
            "runtime": self.predictor.runtime,
            "metrics": info.metrics,
            "preprocessing": info.preprocessing,
            "created": info.created,
        }

    def prepare_image(self, image: Image.Image, top_k: Any = None) -> Prepared:
        """Preprocess a decoded image and look for faces in it (CPU work: run it off the event loop)."""
        k = parse_top_k(top_k, self.options.top_k)
        tensor = self.predictor.transform(self.predictor.load_image(image))
        return Prepared(tensor, k, self.faces(image))

    def prepare(self, body: bytes, content_type: str | None, top_k: Any = None) -> Prepared:
        """Validate and decode a request body; a ``top_k`` in a JSON body wins over the ``top_k`` given here."""
        k = parse_top_k(top_k, self.options.top_k)  # a bad query top_k fails before decoding
        image, body_top_k = read_body(
            body, content_type, self.options.max_pixels, self.predictor.preprocessing.resize_size
        )
        return self.prepare_image(image, body_top_k if body_top_k is not None else k)

    def respond(self, outputs: Outputs, prepared: Prepared, latency_ms: float | None = None) -> dict[str, Any]:
        """The response for one image from its row of the model's outputs."""
        (prediction,) = self.predictor.decode(outputs.logits.reshape(1, -1), prepared.top_k)
        info = self.predictor.artifact.info
        return {
            "predictions": [
                {"label": name, "probability": p, "index": self.class_index[name]} for name, p in prediction.top
            ],
            "dog": dog_verdict(outputs.imagenet_logits, self.options.dog_threshold),
            "human_face": prepared.human_face,
            "model": {"backbone": info.backbone, "classes": len(info.class_names)},
            "latency_ms": latency_ms if latency_ms is not None else 0.0,
        }

    def predict_one(self, prepared: Prepared) -> Outputs:
        """The model on one prepared image, unbatched (SageMaker's ``predict_fn``)."""
        outputs = self.predictor.predict_batch(prepared.tensor.unsqueeze(0))
        imagenet = outputs.imagenet_logits
        return Outputs(outputs.logits[0], imagenet[0] if imagenet is not None else None)

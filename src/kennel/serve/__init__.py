"""The HTTP endpoint (``kennel serve``) and the SageMaker handler functions, on one plain-Python core.

:class:`Endpoint` holds what both share: the predictor, the dog and face verdicts and the response shape. It
knows nothing of HTTP; :mod:`kennel.serve.app` puts FastAPI around it and :mod:`kennel.serve.sagemaker` the
SageMaker inference-toolkit functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from PIL import Image

from kennel import serve_defaults as defaults
from kennel.allocator import give_memory_back
from kennel.predictor import Outputs, Predictor
from kennel.serve.inputs import DecodeSlots, InputError, parse_top_k, read_body
from kennel.serve.verdicts import FaceDetector, dog_verdict

__all__ = ["Endpoint", "EndpointOptions", "FaceSearch", "InputError", "Prepared"]


# When to look for human faces. "not-dog" is the original project's order (a dog first; a human face only where
# there is no dog) and keeps the face search, which costs as much as the model on a CPU, off dog photos' path.
FaceSearch = Literal["not-dog", "always", "off"]
NOT_SEARCHED = {"found": False, "count": 0, "searched": False}


@dataclass(frozen=True)
class EndpointOptions:
    max_pixels: int = defaults.MAX_PIXELS
    top_k: int = defaults.TOP_K
    dog_threshold: float = defaults.DOG_THRESHOLD
    faces: FaceSearch = defaults.FACES
    max_decodes: int = defaults.MAX_DECODES


class Prepared(NamedTuple):
    """One request ready for the model: the input tensor ``[3, S, S]``, its top-k, the decoded image (for a face
    search after the model) and the face verdict when it was made before the model (``faces="always"``)."""

    tensor: torch.Tensor
    top_k: int
    image: Image.Image
    human_face: dict[str, Any] | None


class Endpoint:
    """Request bytes in, response dict out; the model call in between is the caller's (direct or batched)."""

    def __init__(self, predictor: Predictor, options: EndpointOptions | None = None) -> None:
        self.predictor = predictor
        self.options = options or EndpointOptions()
        self.faces = FaceDetector(self.options.faces != "off")
        self.class_index = {name: i for i, name in enumerate(predictor.class_names)}
        # glibc keeps freed heap memory under the server's allocator settings: a burst of huge images would
        # leave the process hundreds of MB larger for good, so it goes back once the burst is decoded.
        self.decodes = DecodeSlots(self.options.max_decodes, after_large=give_memory_back)

    @classmethod
    def load(
        cls,
        artifact_dir: Path | str,
        runtime: str = defaults.RUNTIME,
        options: EndpointOptions | None = None,
        precision: str = defaults.PRECISION,
    ) -> Endpoint:
        return cls(Predictor.load(artifact_dir, runtime=runtime, precision=precision), options)

    def model_info(self) -> dict[str, Any]:
        info = self.predictor.artifact.info
        return {
            "backbone": info.backbone,
            "classes": len(info.class_names),
            "class_names": list(info.class_names),
            "has_imagenet_head": info.has_imagenet_head,
            "runtime": self.predictor.runtime,
            "precision": self.predictor.engine.precision,
            "metrics": info.metrics,
            "preprocessing": info.preprocessing,
            "created": info.created,
        }

    def prepare_image(self, image: Image.Image, top_k: Any = None) -> Prepared:
        """Preprocess a decoded image, and look for faces in it with ``faces="always"`` (CPU work: run it off the
        event loop)."""
        k = parse_top_k(top_k, self.options.top_k)
        tensor = self.predictor.transform(self.predictor.load_image(image))
        return Prepared(tensor, k, image, self.faces(image) if self.options.faces == "always" else None)

    def prepare(self, body: bytes, content_type: str | None, top_k: Any = None) -> Prepared:
        """Validate and decode a request body; a ``top_k`` in a JSON body wins over the ``top_k`` given here. Decodes
        wait for a slot (``max_decodes`` at once) and keep no more pixels than the model's resize needs."""
        k = parse_top_k(top_k, self.options.top_k)  # a bad query top_k fails before decoding
        image, body_top_k = self.read(body, content_type)
        return self.prepare_image(image, body_top_k if body_top_k is not None else k)

    def decode(self, body: bytes, content_type: str | None) -> Image.Image:
        """The photo of a request body, checked and decoded as :meth:`prepare` does it."""
        return self.read(body, content_type)[0]

    def explain(self, body: bytes, content_type: str | None) -> bytes:
        """A PNG of where the model looked in the photo of ``body`` (Grad-CAM over the photo). The explainer holds
        its own PyTorch copy of the model, loaded on first use."""
        from kennel.explain import explain_png

        return explain_png(self.predictor, self.decode(body, content_type))

    def read(self, body: bytes, content_type: str | None) -> tuple[Image.Image, Any]:
        return read_body(
            body, content_type, self.options.max_pixels, self.predictor.preprocessing.resize_size, self.decodes.take
        )

    def respond(self, outputs: Outputs, prepared: Prepared, started: float | None = None) -> dict[str, Any]:
        """The response for one image from its row of the model's outputs; ``started`` (a ``time.perf_counter``
        reading) gives ``latency_ms``. May look for faces: CPU work, run it off the event loop."""
        (prediction,) = self.predictor.decode(outputs.logits.reshape(1, -1), prepared.top_k)
        dog = dog_verdict(outputs.imagenet_logits, self.options.dog_threshold)
        face = prepared.human_face
        if face is None:
            searched = self.options.faces == "not-dog" and not dog["is_dog"]
            face = self.faces(prepared.image) if searched else NOT_SEARCHED
        info = self.predictor.artifact.info
        return {
            "predictions": [
                {"label": name, "probability": p, "index": self.class_index[name]} for name, p in prediction.top
            ],
            "dog": dog,
            "human_face": face,
            "model": {"backbone": info.backbone, "classes": len(info.class_names)},
            "latency_ms": 1000 * (time.perf_counter() - started) if started is not None else 0.0,
        }

    def predict_one(self, prepared: Prepared) -> Outputs:
        """The model on one prepared image, unbatched (SageMaker's ``predict_fn``)."""
        outputs = self.predictor.predict_batch(prepared.tensor.unsqueeze(0))
        imagenet = outputs.imagenet_logits
        return Outputs(outputs.logits[0], imagenet[0] if imagenet is not None else None)

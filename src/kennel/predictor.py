"""Prediction from a model artifact, in plain Python (no HTTP): the endpoint and ``kennel predict`` build on it.

The model runs on the inference engine (:mod:`kennel.inference`): ONNX Runtime, PyTorch or CUDA, whichever
measures fastest here, from the artifact's ONNX files or its weights. Preprocessing always comes from the artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image

from kennel.artifact import Artifact, ArtifactError, load_artifact
from kennel.data.images import ImageError, open_rgb, to_rgb

log = logging.getLogger(__name__)

ImageInput = Image.Image | Path | str


class Outputs(NamedTuple):
    """Raw outputs of one batch, float32 on the CPU; ``imagenet_logits`` is None without an ImageNet head."""

    logits: torch.Tensor
    imagenet_logits: torch.Tensor | None


@dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of one photo as ``(class_name, probability)``, most probable first."""

    index: int  # class index of the most probable class
    top: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "probability": self.probability,
            "top": [{"label": name, "probability": p} for name, p in self.top],
        }


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def artifact_graph(artifact: Artifact):
    """The artifact's whole model as the inference engine runs it: its own ONNX files (fp32, and int8 when the job
    made one), or its PyTorch weights, built only if a PyTorch backend is chosen."""
    from kennel.inference import classifier_graph

    def build():
        return artifact.model if artifact.model is not None else load_artifact(artifact.path).model

    return classifier_graph(
        build,
        artifact.info.backbone,
        artifact.preprocessing.input_size,
        artifact.info.has_imagenet_head,
        identity=f"artifact:{artifact.path.resolve()}:{artifact.info.created}",
        onnx_files=artifact.onnx_files,
    )


class Predictor:
    """Top-k predictions of an artifact's model for photos (PIL images or files)."""

    def __init__(
        self,
        artifact: Artifact,
        runtime: str = "auto",
        device: str | torch.device = "auto",
        precision: str = "auto",
    ) -> None:
        from kennel.inference import EngineError, open_engine

        self.artifact = artifact
        self.device = _resolve_device(device)
        try:
            # auto never picks int8 on its own here: the job that trained the model decided whether int8 keeps
            # its accuracy, and records that in the artifact (int8_ok); asking for it is the caller's choice.
            exclude = () if precision == "int8" or artifact.info.metrics.get("int8_ok") else ("onnxruntime-int8",)
            self.engine = open_engine(artifact_graph(artifact), self.device, runtime, precision, exclude=exclude)
        except EngineError as exc:
            raise ArtifactError(f"{artifact.path}: {exc}") from None
        self.preprocessing = artifact.preprocessing
        self.transform = self.preprocessing.eval_transform()
        self.class_names = list(artifact.info.class_names)

    @classmethod
    def load(
        cls,
        artifact_dir: Path | str,
        runtime: str = "auto",
        device: str | torch.device = "auto",
        precision: str = "auto",
    ) -> Predictor:
        """Open the artifact in ``artifact_dir``; the PyTorch model is only built when the backend needs it."""
        return cls(load_artifact(artifact_dir, with_model=False), runtime, device, precision)

    @property
    def runtime(self) -> str:
        """The inference backend that runs the model (``onnxruntime``, ``torch-channels-last``, ...)."""
        return self.engine.backend.name

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def load_image(self, image: ImageInput) -> Image.Image:
        """An RGB PIL image from a PIL image or a file; raises :class:`ImageError` for what is not a photo."""
        if isinstance(image, Image.Image):
            return to_rgb(image)
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        return open_rgb(path, draft_size=self.preprocessing.resize_size)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The ``[N, 3, S, S]`` float batch the model takes."""
        return torch.stack([self.transform(self.load_image(image)) for image in images])

    def predict_batch(self, batch: torch.Tensor) -> Outputs:
        """Raw logits for an already preprocessed batch (what a dynamic batcher calls)."""
        if batch.ndim != 4 or batch.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected a batch [N, 3, {self.input_size}, {self.input_size}], got {tuple(batch.shape)}")
        outputs = self.engine(batch)
        return Outputs(outputs[0], outputs[1] if len(outputs) > 1 else None)

    def decode(self, logits: torch.Tensor, top_k: int = 5) -> list[Prediction]:
        """Logits ``[N, C]`` to predictions with the ``top_k`` most probable classes each."""
        k = max(1, min(top_k, len(self.class_names)))
        probabilities, indices = logits.float().softmax(dim=1).topk(k, dim=1)
        return [
            Prediction(
                int(idx[0]),
                [(self.class_names[i], float(p)) for i, p in zip(idx.tolist(), probs.tolist(), strict=True)],
            )
            for probs, idx in zip(probabilities, indices, strict=True)
        ]

    def predict(self, images: Sequence[ImageInput], top_k: int = 5, batch_size: int = 32) -> list[Prediction]:
        """Predictions for photos, in order, ``batch_size`` at a time."""
        images = list(images)
        predictions: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start : start + batch_size])
            predictions += self.decode(self.predict_batch(batch).logits, top_k)
        return predictions

"""Prediction from a model artifact, in plain Python (no HTTP): the endpoint and ``kennel predict`` build on it.

Two runtimes read the same artifact: ONNX Runtime on the CPU (faster there than eager PyTorch) and PyTorch
(CUDA, or when the artifact has no ONNX file). Preprocessing always comes from the artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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


class _TorchRuntime:
    def __init__(self, artifact: Artifact, device: torch.device) -> None:
        model = artifact.model if artifact.model is not None else load_artifact(artifact.path).model
        # channels_last: about 30% faster for lite0 on a 2-core CPU, and what cuDNN prefers.
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> Outputs:
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        features = self.model.features(batch)
        logits = self.model.head(features).float().cpu()
        head = self.model.imagenet_head
        return Outputs(logits, head(features).float().cpu() if head is not None else None)


_ARENA_REGISTERED = False


def _session_options(ort):
    """Sessions share one CPU arena that grows by what is asked, not by doubling: ONNX Runtime's default arena
    doubles its last extension, and a server's memory jumped by hundreds of MB at a time (benchmarks/serve_soak.py).
    """
    global _ARENA_REGISTERED
    options = ort.SessionOptions()
    if not _ARENA_REGISTERED:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: kSameAsRequested
        _ARENA_REGISTERED = True
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


class _OnnxRuntime:
    def __init__(self, artifact: Artifact, device: torch.device) -> None:
        import onnxruntime as ort

        path = artifact.onnx_path
        if path is None:
            raise ArtifactError(f"{artifact.path} has no ONNX model; use runtime 'torch' or re-export the artifact")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("onnxruntime here has no CUDA provider; running the ONNX model on the CPU")
        self.session = ort.InferenceSession(str(path), _session_options(ort), providers=providers)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: torch.Tensor) -> Outputs:
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        results = dict(zip(self.outputs, self.session.run(self.outputs, {"image": array}), strict=True))
        imagenet = results.get("imagenet_logits")
        return Outputs(
            torch.from_numpy(results["logits"]), torch.from_numpy(imagenet) if imagenet is not None else None
        )


RUNTIMES: dict[str, Callable[[Artifact, torch.device], Callable[[torch.Tensor], Outputs]]] = {
    "torch": _TorchRuntime,
    "onnx": _OnnxRuntime,
}


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def choose_runtime(artifact: Artifact, device: torch.device) -> str:
    """ONNX Runtime on the CPU when the artifact has an ONNX file; PyTorch otherwise (CUDA included)."""
    if device.type == "cpu" and artifact.onnx_path is not None and _onnxruntime_installed():
        return "onnx"
    return "torch"


class Predictor:
    """Top-k predictions of an artifact's model for photos (PIL images or files)."""

    def __init__(self, artifact: Artifact, runtime: str = "auto", device: str | torch.device = "auto") -> None:
        self.artifact = artifact
        self.device = _resolve_device(device)
        self.runtime = choose_runtime(artifact, self.device) if runtime == "auto" else runtime
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose auto, {', '.join(RUNTIMES)}")
        self._run = RUNTIMES[self.runtime](artifact, self.device)
        self.preprocessing = artifact.preprocessing
        self.transform = self.preprocessing.eval_transform()
        self.class_names = list(artifact.info.class_names)

    @classmethod
    def load(cls, artifact_dir: Path | str, runtime: str = "auto", device: str | torch.device = "auto") -> Predictor:
        """Open the artifact in ``artifact_dir``; the PyTorch model is only built when the runtime needs it."""
        return cls(load_artifact(artifact_dir, with_model=False), runtime, device)

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
        return self._run(batch)

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

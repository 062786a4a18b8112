"""Where a model looked, on ONNX Runtime alone: the heatmaps ``kennel report`` makes for a job that left none
(a tuning trial's), without importing PyTorch, whose import alone takes more memory than the whole report may.

kennel's heads are linear over pooled feature maps: global average pooling, a fused backbone's standardisation,
dropout, one linear layer. For such a model Grad-CAM is CAM (Selvaraju et al. 2017, section 3.1): the gradient of
class c's score with respect to channel k of a member's last feature map is ``W[c, k] / (std[k] * H * W)`` at
every position, so Grad-CAM's channel weights are the linear layer's row over the standardisation's spread (the
constant ``1 / (H * W)`` aside, which the scaling to 0..1 takes out), and no backward pass is needed. The feature
maps are the inputs of the ONNX graph's global poolings, added to its outputs; the graph is the artifact's
``model.onnx``, or the engine's export of the frozen backbone in the feature cache that the job's features came
from (a tuning trial's artifact has no ONNX file). The weights are read from the artifact's safetensors. Each
member's map is scaled, resized to the input and averaged as :func:`kennel.explain.grad_cams` does, so both give
the same heatmap (``tests/test_cams.py``). A model of any other shape raises :class:`CamsUnavailable`, and its
caller explains it with PyTorch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kennel.artifact_files import INFO_FILE, ONNX_FILE, WEIGHTS_FILE
from kennel.data.images import to_rgb
from kennel.overlays import overlaid
from kennel.preprocessing import Preprocessing

# Photos per forward pass: the activations of 4 take half the memory of 8 and run as fast (fused lite0+lite2
# at 260 px on a 2-core EPYC: 24 photos in 0.62 s and 309 MB peak, against 0.69 s and 485 MB in batches of 8).
BATCH = 4
POOLING = "GlobalAveragePool"  # how kennel's backbones pool their last feature map in ONNX


class CamsUnavailable(Exception):
    """A model these maps cannot explain (another head, another pooling, no ONNX file, a file that does not
    read); the message says which."""


def head_weights(folder: Path) -> np.ndarray:
    """The linear map from the pooled features to the class scores, ``[classes, features]``, with the
    standardisation's spread folded in (its mean moves every position's score alike: the bias's part)."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
            head = {key: weights.get_tensor(key) for key in weights.keys() if key.startswith("head.")}  # noqa: SIM118 - safe_open is not iterable
    except Exception as exc:  # a damaged file: PyTorch explains it, or says why not
        raise CamsUnavailable(f"cannot read {WEIGHTS_FILE}: {exc}") from exc
    matrices = [key for key, value in head.items() if key.endswith(".weight") and value.ndim == 2]
    allowed = {*matrices, *(key.removesuffix("weight") + "bias" for key in matrices), "head.0.mean", "head.0.std"}
    if len(matrices) != 1 or set(head) - allowed:
        raise CamsUnavailable(f"the head is not one linear layer over pooled features: {', '.join(sorted(head))}")
    weight = head[matrices[0]].astype(np.float32)
    spread = head.get("head.0.std")
    return weight / spread.astype(np.float32)[None, :] if spread is not None else weight


def _with_feature_maps(path: Path) -> tuple[bytes, list[str]]:
    """The ONNX model of ``path`` with the input of each global pooling among its outputs, and their names in
    the order they run: a fused backbone's members in turn, then any test-time augmentation's further views."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # any unreadable file: PyTorch explains the model instead
        raise CamsUnavailable(f"cannot read {path}: {exc}") from exc
    names = [node.input[0] for node in model.graph.node if node.op_type == POOLING]
    if not names:
        raise CamsUnavailable(f"{path} has no {POOLING} over a feature map")
    outputs = {output.name for output in model.graph.output}
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names if name not in outputs
    )
    return model.SerializeToString(), names


def _interpolation(source: int, target: int) -> np.ndarray:
    """The ``[target, source]`` matrix of a bilinear resize with half-pixel centres, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` computes it (edges clamped)."""
    position = np.maximum((np.arange(target) + 0.5) * source / target - 0.5, 0.0)
    low = np.minimum(position.astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    share = (position - low).astype(np.float32)
    matrix = np.zeros((target, source), np.float32)
    np.add.at(matrix, (np.arange(target), low), 1.0 - share)
    np.add.at(matrix, (np.arange(target), high), share)
    return matrix


def _scaled(maps: np.ndarray) -> np.ndarray:
    """Each map of ``[N, ...]`` shifted and scaled to 0..1, as :func:`kennel.explain.grad_cams` scales them."""
    flat = maps.reshape(len(maps), -1)
    flat = flat - flat.min(axis=1, keepdims=True)
    return (flat / (1e-7 + flat.max(axis=1, keepdims=True))).reshape(maps.shape)


def cams(maps: Sequence[np.ndarray], weight: np.ndarray, classes: Sequence[int], size: int) -> np.ndarray:
    """The CAM of each photo for its class in ``classes``, ``[N, size, size]`` in 0..1 over the input crop, from
    each member's last feature maps ``[N, C, H, W]`` and the head's ``weight`` (:func:`head_weights`)."""
    widths = [member.shape[1] for member in maps]
    if sum(widths) != weight.shape[1]:
        raise CamsUnavailable(f"feature maps of {sum(widths)} channels for a head over {weight.shape[1]} features")
    rows = weight[np.asarray(classes)]
    per_member, start = [], 0
    for member, width in zip(maps, widths, strict=True):
        cam = _scaled(np.maximum(np.einsum("nk,nkhw->nhw", rows[:, start : start + width], member), 0.0))
        rows_up, columns_up = _interpolation(cam.shape[1], size), _interpolation(cam.shape[2], size)
        per_member.append(np.einsum("yh,nhw,xw->nyx", rows_up, cam, columns_up))
        start += width
    return _scaled(np.maximum(np.mean(per_member, axis=0), 0.0))


class OnnxExplainer:
    """Heatmaps of a model artifact on ONNX Runtime, with :class:`kennel.explain.Explainer`'s ``pictures``."""

    def __init__(self, onnx_file: Path, weight: np.ndarray, info: dict[str, Any]) -> None:
        import onnxruntime as ort

        from kennel.processes import available_cores

        serialized, names = _with_feature_maps(onnx_file)
        members = len(str(info["backbone"]).split("+"))
        if len(names) % members:
            raise CamsUnavailable(f"{len(names)} poolings in {onnx_file.name} for {members} backbones")
        self.maps = names[:members]  # the plain view's: test-time augmentation's views come after it
        options = ort.SessionOptions()
        options.intra_op_num_threads = available_cores()
        try:
            self.session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's own errors, any of them
            raise CamsUnavailable(f"ONNX Runtime cannot open {onnx_file}: {exc}") from exc
        self.input = self.session.get_inputs()[0].name
        self.weight = weight
        self.class_names = list(info["class_names"])
        self.preprocessing = Preprocessing.from_dict(info["preprocessing"])

    @classmethod
    def load(cls, folder: Path, job: dict[str, Any] | None = None) -> OnnxExplainer:
        """The explainer of the artifact in ``folder``, run on its ONNX file, else on the engine file the job's
        record names (``job["engine"]["extraction"]["graph_file"]``); raises :class:`CamsUnavailable`."""
        try:
            info = json.loads((folder / INFO_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise CamsUnavailable(f"cannot read {folder / INFO_FILE}: {exc}") from exc
        weight = head_weights(folder)
        extraction = ((job or {}).get("engine") or {}).get("extraction") or {}
        candidates = [folder / ONNX_FILE] if info.get("onnx") else []
        candidates += [Path(extraction["graph_file"])] if extraction.get("graph_file") else []
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise CamsUnavailable("neither the artifact nor the feature cache has an ONNX file of this model")
        return cls(found[0], weight, info)

    def crops(self, batch: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """The CAMs over the input crop of a preprocessed ``batch`` for ``classes``, ``[N, S, S]``."""
        maps = self.session.run(self.maps, {self.input: batch})
        return cams(maps, self.weight, classes, batch.shape[-1])

    def pictures(self, images: Sequence[Image.Image], classes: Sequence[int], max_side: int) -> list[Image.Image]:
        """Each photo's overlay for its class in ``classes``, at most ``max_side`` pixels long."""
        from kennel.export.standalone.inference import preprocess  # torchvision's eval transform in NumPy

        images = [to_rgb(image) for image in images]
        settings = self.preprocessing.to_dict()
        crops: list[np.ndarray] = []
        for start in range(0, len(images), BATCH):
            batch = np.stack([preprocess(image, settings) for image in images[start : start + BATCH]])
            crops.extend(self.crops(batch, classes[start : start + BATCH]))
        return overlaid(images, crops, self.preprocessing, max_side)

"""Where the model looked: a Grad-CAM heatmap of an artifact's PyTorch model, mapped back onto the photo.

Grad-CAM (:func:`grad_cams`) weighs each channel of a layer's feature map by the mean gradient of the class score
over it. With several layers it averages their CAMs once each is resized to the input and scaled to 0..1, as the
``grad-cam`` package (pytorch-grad-cam) does, which is what a fused backbone needs: one layer per member, each
member's say counted alike (the head standardises the members' features to one scale, so none dominates the
prediction either). kennel computes plain Grad-CAM itself, for a batch of photos at once, with a backward pass that
stops at the feature maps: their gradients are all it needs, so the cost is about one forward pass of the batch.
The package's other methods (:data:`METHODS`) run through the package. kennel adds what neither can know:

- which layer to explain: each backbone's last feature map, found by running the model once (the last module whose
  output is a 4-D map larger than 1x1, so the pooling is passed over), for any registered backbone;
- the model without its test-time augmentation (a flip or five crops would run the layer several times per
  forward, and Grad-CAM pairs one activation with one gradient); the class and probability still come from the
  whole model, as the endpoint serves it;
- where the model's input crop lies in the photo: the heatmap has the photo's size, zero outside the crop.

The model runs with gradients, so this needs the artifact's PyTorch weights, not its ONNX file.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from kennel.artifact import Artifact, load_artifact, read_info
from kennel.data.images import to_rgb
from kennel.errors import Failure
from kennel.models.classifier import TTA, Classifier
from kennel.models.fusion import Fusion
from kennel.overlays import overlaid, overlay, photo_heatmap, png_bytes
from kennel.preprocessing import Preprocessing

if TYPE_CHECKING:
    from kennel.predictor import Predictor

DISPLAY_SIDE = 1024  # longest side of the PNGs made for people (the CLI, the endpoint): the crop is a few hundred px
METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")  # the last three: pytorch-grad-cam's, see _cam_class
BATCH = 8  # photos per forward pass of :meth:`Explainer.pictures`: activations of a few, not of a whole gallery


class ExplainError(Failure):
    """A model that cannot be explained here (no feature map, no ``grad-cam`` package); the message says why."""


@dataclass(frozen=True)
class Explanation:
    """Where the model looked for class ``class_index``: ``heatmap`` is ``[H, W]`` in 0..1 at the photo's size
    (1 where it looked most; 0 where it did not, and outside the crop the model sees)."""

    heatmap: np.ndarray
    class_index: int
    label: str
    probability: float  # of ``class_index``, from the whole model (test-time augmentation included)
    ranking: list[tuple[str, float]]  # every class with its probability, likewise, most probable first


def last_feature_maps(features: nn.Module, input_size: int) -> list[nn.Module]:
    """The module giving each backbone's last feature map: one for a single backbone, one per member of a fused
    one. Found by running ``features`` once on a blank input, since backbones name their last block differently."""
    members = list(features.members) if isinstance(features, Fusion) else [features]
    fired: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            fired.append((module, tuple(output.shape)))

    handles = [module.register_forward_hook(record) for module in features.modules()]
    try:
        parameter = next(features.parameters())
        with torch.no_grad():
            features(torch.zeros(1, 3, input_size, input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for member in members:
        inside = set(member.modules())
        maps = [module for module, shape in fired if module in inside and len(shape) == 4 and shape[2] * shape[3] > 1]
        if not maps:
            raise ExplainError(f"{type(member).__name__} gives no feature map larger than 1x1 to explain")
        layers.append(maps[-1])  # a block's hook fires after its children's: the last is the block's own output
    return layers


def without_tta(features: nn.Module) -> nn.Module:
    """The feature extractor inside a test-time augmentation wrapper (:data:`kennel.models.classifier.TTA`)."""
    wrappers = tuple(wrapper for wrapper in TTA.values() if wrapper is not None)
    return features.inner if isinstance(features, wrappers) else features


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``[N, ...]`` shifted and scaled to 0..1, as pytorch-grad-cam scales a CAM."""
    flat = maps.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    return (flat / (1e-7 + flat.max(dim=1, keepdim=True).values)).view_as(maps)


def grad_cams(net: nn.Module, layers: list[nn.Module], batch: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Grad-CAM of ``net`` for each photo of ``batch`` (preprocessed) and its class in ``classes``: ``[N, S, S]``
    in 0..1 over the input crop, the CAMs of ``layers`` (each firing once per forward) averaged.

    Each layer's output is taken as a new leaf of the graph: the backbone before it runs as inference does (its
    parameters ask for no gradients, nor does the batch), and the backward pass goes from the class scores back to
    those feature maps only (pooling and head), not through the backbone. Call it with gradients enabled."""
    maps: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        maps.append(leaf)
        return leaf.clone()  # what the model goes on with: in-place operations after the layer change this copy

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        scores = net(batch).float()
    finally:
        for handle in handles:
            handle.remove()
    if len(maps) != len(layers):
        raise ExplainError(f"{len(layers)} layers to explain gave {len(maps)} feature maps in one forward pass")
    targets = torch.as_tensor(list(classes), device=scores.device)[:, None]
    gradients = torch.autograd.grad(scores.gather(1, targets).sum(), maps)
    cams = []
    for activations, gradient in zip(maps, gradients, strict=True):
        weights = gradient.float().mean(dim=(2, 3), keepdim=True)
        cam = _scaled((weights * activations.float()).sum(dim=1, keepdim=True).clamp(min=0))
        cams.append(functional.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False))
    return _scaled(torch.cat(cams, dim=1).clamp(min=0).mean(dim=1)).detach().cpu().numpy()


def _cam_class(method: str):
    """The pytorch-grad-cam class of ``method``; None for plain Grad-CAM, which :func:`grad_cams` computes."""
    if method not in METHODS:
        raise ExplainError(f"unknown explanation method {method!r}; known: {', '.join(METHODS)}")
    if method == "gradcam":
        return None
    try:
        import pytorch_grad_cam as cams
    except ImportError as exc:
        raise ExplainError(f"the {method} explanation needs the grad-cam package: pip install grad-cam") from exc
    return dict(zip(METHODS[1:], (cams.GradCAMPlusPlus, cams.HiResCAM, cams.LayerCAM), strict=True))[method]


def _gradients():
    """Gradients on, whatever the caller switched off: grad mode is per thread, and a server's worker or an
    evaluation loop may have entered no-grad or inference mode."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.enable_grad())
    return stack


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Explainer:
    """Grad-CAM of one model, thread-safe: one explanation at a time (the hooks sit on the model).

    It owns ``model``: moves it to ``device`` and stops its parameters asking for gradients (only the input's and
    the feature maps' are needed), so give it a copy of a model something else still runs."""

    def __init__(
        self,
        model: Classifier,
        class_names: list[str],
        preprocessing: Preprocessing,
        device: str | torch.device = "auto",
        method: str = "gradcam",
    ) -> None:
        self.device = _device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        self.transform = preprocessing.eval_transform()
        self.cam_class = _cam_class(method)
        self.net = nn.Sequential(without_tta(model.features), model.head)
        self.layers = last_feature_maps(self.net[0], preprocessing.input_size)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: Predictor | Artifact | Path | str, device: str | torch.device = "auto") -> Explainer:
        """An explainer of an artifact (a folder, a loaded :class:`Artifact`, or a :class:`Predictor`'s), with its
        own copy of the PyTorch model."""
        artifact = getattr(source, "artifact", source)
        if isinstance(artifact, Artifact) and artifact.model is not None:
            model = copy.deepcopy(artifact.model)
        else:
            artifact = load_artifact(artifact.path if isinstance(artifact, Artifact) else artifact)
            model = artifact.model
        return cls(model, artifact.class_names, artifact.preprocessing, device)

    def explain(
        self, image: Image.Image, class_index: int | None = None, size: tuple[int, int] | None = None
    ) -> Explanation:
        """Where the model looked in ``image`` for ``class_index`` (its most probable class by default); the heatmap
        at ``size`` (width, height; the photo's by default)."""
        image = to_rgb(image)
        batch = self.transform(image).unsqueeze(0).to(self.device)
        with self._lock, _gradients():
            with torch.no_grad():
                probabilities = self.model(batch).float().softmax(dim=1)[0].cpu().numpy()
            index = int(probabilities.argmax()) if class_index is None else self._checked(class_index)
            crop = self._crops(batch, [index])[0]
        heatmap = photo_heatmap(crop, image.size, self.preprocessing, size)
        order = np.argsort(-probabilities, kind="stable")
        ranking = [(self.class_names[i], float(probabilities[i])) for i in order]
        return Explanation(heatmap, index, self.class_names[index], float(probabilities[index]), ranking)

    def _crops(self, batch: torch.Tensor, classes: list[int]) -> np.ndarray:
        """The CAMs over the input crop of ``batch`` for ``classes``, ``[N, S, S]``; with gradients enabled."""
        if self.cam_class is None:
            return grad_cams(self.net, self.layers, batch, classes)
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        batch.requires_grad_(True)  # the parameters ask for no gradients: the input carries the graph
        cam = self.cam_class(self.net, self.layers)
        try:
            # With several layers (a fused backbone's members, run one after another), the library pairs
            # activations and gradients by order: autograd runs the later branch's backward first, and the
            # library prepends each gradient, so both lists come out in forward order.
            return cam(batch, targets=[ClassifierOutputTarget(index) for index in classes])
        finally:
            cam.activations_and_grads.release()  # not ``with``: its __exit__ swallows IndexError

    def pictures(
        self, images: Sequence[Image.Image], classes: Sequence[int], max_side: int = DISPLAY_SIDE
    ) -> list[Image.Image]:
        """Each photo's overlay for its class in ``classes``, at most ``max_side`` pixels long, made :data:`BATCH`
        photos at a time (a report's gallery of mistakes: their classes are known, so no forward pass asks)."""
        images = [to_rgb(image) for image in images]
        classes = [self._checked(index) for index in classes]
        crops: list[np.ndarray] = []
        with self._lock, _gradients():
            for start in range(0, len(images), BATCH):
                batch = torch.stack([self.transform(image) for image in images[start : start + BATCH]])
                crops.extend(self._crops(batch.to(self.device), classes[start : start + BATCH]))
        return overlaid(images, crops, self.preprocessing, max_side)

    def _checked(self, class_index: int) -> int:
        if not 0 <= class_index < len(self.class_names):
            raise ExplainError(f"class index {class_index} is not one of the model's 0..{len(self.class_names) - 1}")
        return int(class_index)

    def picture(
        self, image: Image.Image, class_index: int | None = None, max_side: int = DISPLAY_SIDE
    ) -> tuple[Explanation, Image.Image]:
        """The explanation and its overlay for a person, at most ``max_side`` pixels long: the model sees the photo
        as it is, only the picture is shrunk (the crop the model reads is a few hundred pixels anyway)."""
        image = to_rgb(image)
        shown = image.copy()
        shown.thumbnail((max_side, max_side))
        explanation = self.explain(image, class_index, size=shown.size)
        return explanation, overlay(shown, explanation.heatmap)

    def png(self, image: Image.Image, class_index: int | None = None, max_side: int = DISPLAY_SIDE) -> bytes:
        """:meth:`picture`'s overlay as PNG bytes."""
        return png_bytes(self.picture(image, class_index, max_side)[1])


@lru_cache(maxsize=4)
def _cached(path: str, created: str, device: str) -> Explainer:
    return Explainer.load(path, device)


_loading = threading.Lock()


def explainer(source: Predictor | Artifact | Path | str, device: str | torch.device | None = None) -> Explainer:
    """The explainer of an artifact, loaded on first use and kept (a few at most): what a server holds beside its
    predictor. A :class:`Predictor`'s runs on the predictor's device, anything else's on ``device`` (auto)."""
    artifact = getattr(source, "artifact", source)
    folder = Path(artifact.path if isinstance(artifact, Artifact) else artifact).expanduser().resolve()
    device = device if device is not None else getattr(source, "device", "auto")
    created = read_info(folder).created  # an artifact replaced in place is a new model
    with _loading:  # one load per artifact, however many requests arrive at once
        return _cached(str(folder), created, str(_device(device)))


def explain(
    source: Predictor | Artifact | Path | str, image: Image.Image, class_index: int | None = None
) -> Explanation:
    """Where the model of ``source`` looked in ``image`` for ``class_index`` (its most probable class by default)."""
    return explainer(source).explain(image, class_index)


def explain_png(
    source: Predictor | Artifact | Path | str, image: Image.Image | bytes, class_index: int | None = None
) -> bytes:
    """The overlay PNG for a photo (a decoded image, or its bytes): what an endpoint's ``/explain`` returns.
    Thread-safe; the model loads on the first call."""
    if isinstance(image, bytes):
        from kennel.data.images import ImageError

        try:
            with Image.open(io.BytesIO(image)) as opened:
                opened.load()
                image = to_rgb(opened)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot decode the image ({exc})") from None
    return explainer(source).png(image, class_index)

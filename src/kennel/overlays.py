"""A heatmap made visible: placed where the model's crop lies in the photo, coloured and blended over it, and
written as PNG (what the CLI, the endpoint's ``/explain`` and the report's gallery show)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from kennel.data.images import to_rgb
from kennel.preprocessing import Preprocessing

ALPHA = 0.45  # how much of the colour map covers the photo
COLORMAP = "inferno"  # dark where the model did not look (and outside its crop), bright yellow where it did


def photo_heatmap(
    cam: np.ndarray, photo_size: tuple[int, int], pre: Preprocessing, size: tuple[int, int] | None = None
) -> np.ndarray:
    """A CAM over the model's ``[S, S]`` input crop placed where that crop lies in a photo of ``photo_size``
    (width, height), as the eval transform resizes and crops it, at ``size`` (width, height; the photo's by
    default); zero outside the crop."""
    (resized_w, resized_h), (left, top) = pre.crop_box(photo_size)
    canvas = np.zeros((resized_h, resized_w), np.float32)
    canvas[top : top + pre.input_size, left : left + pre.input_size] = cam
    out = Image.fromarray(canvas, mode="F").resize(size or photo_size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = ALPHA, colormap: str = COLORMAP) -> Image.Image:
    """``heatmap`` coloured with ``colormap`` and blended over ``image`` (resized to it if its size differs)."""
    from matplotlib import colormaps

    image = to_rgb(image)
    if heatmap.shape != (image.height, image.width):
        heatmap = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(image.size), np.float32)
    colours = colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * (np.asarray(image, np.float32) / 255.0) + alpha * colours
    return Image.fromarray(np.round(255.0 * blended).astype(np.uint8), mode="RGB")


def overlaid(
    images: Sequence[Image.Image], crops: Sequence[np.ndarray], pre: Preprocessing, max_side: int
) -> list[Image.Image]:
    """Each photo, at most ``max_side`` pixels long, with its CAM over the model's input crop laid over it."""
    shown = []
    for image, crop in zip(images, crops, strict=True):
        picture = image.copy()
        picture.thumbnail((max_side, max_side))
        shown.append(overlay(picture, photo_heatmap(crop, image.size, pre, picture.size)))
    return shown


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def overlay_png(image: Image.Image, heatmap: np.ndarray, alpha: float = ALPHA, colormap: str = COLORMAP) -> bytes:
    """:func:`overlay` as PNG bytes."""
    return png_bytes(overlay(image, heatmap, alpha, colormap))

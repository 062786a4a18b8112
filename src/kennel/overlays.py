"""A heatmap made visible: coloured and blended over the photo it belongs to, and written as PNG (what the CLI,
the endpoint's ``/explain`` and the report's gallery show)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from kennel.data.images import to_rgb

ALPHA = 0.45  # how much of the colour map covers the photo
COLORMAP = "inferno"  # dark where the model did not look (and outside its crop), bright yellow where it did


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = ALPHA, colormap: str = COLORMAP) -> Image.Image:
    """``heatmap`` coloured with ``colormap`` and blended over ``image`` (resized to it if its size differs)."""
    from matplotlib import colormaps

    image = to_rgb(image)
    if heatmap.shape != (image.height, image.width):
        heatmap = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(image.size), np.float32)
    colours = colormaps[colormap](np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * (np.asarray(image, np.float32) / 255.0) + alpha * colours
    return Image.fromarray(np.round(255.0 * blended).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def overlay_png(image: Image.Image, heatmap: np.ndarray, alpha: float = ALPHA, colormap: str = COLORMAP) -> bytes:
    """:func:`overlay` as PNG bytes."""
    return png_bytes(overlay(image, heatmap, alpha, colormap))

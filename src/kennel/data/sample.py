"""A tiny synthetic dataset in dogImages layout, for tests, demos and smoke runs without real photos.

Each class has its own hue and its own pattern (stripes at a class-specific angle and frequency), so a tiny CNN
learns it in a few epochs; every image gets a random background, blob, offset and pixel noise, so no two files are
identical or near-identical (``kennel data check`` finds no duplicates) and the task is not a lookup.
"""

from __future__ import annotations

import colorsys
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from kennel.data.layout import SPLITS

log = logging.getLogger(__name__)


def class_folder(index: int) -> str:
    """``0 -> 001.Synthetic_a``, ``25 -> 026.Synthetic_z``, ``26 -> 027.Synthetic_ba`` (readable: "Synthetic a")."""
    letters, n = "", index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n //= 26
        if n == 0:
            break
    return f"{index + 1:03d}.Synthetic_{letters}"


def class_colour(index: int, num_classes: int) -> np.ndarray:
    """Hues evenly spread around the colour wheel, so class means differ clearly."""
    r, g, b = colorsys.hsv_to_rgb(index / num_classes, 0.75, 0.85)
    return np.array([r, g, b], dtype=np.float32) * 255.0


def smooth_noise(size: int, rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """A random field that varies over a few cells of the image, like the background of a photo."""
    coarse = Image.fromarray(rng.normal(0, 1, (cells, cells)).astype(np.float32), "F")
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def render(index: int, num_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class ``index``: its hue and stripes at its own angle (the signal), under a random smooth
    background and a random blob, offset and pixel noise (the nuisance), so a class's images differ as photos do."""
    angle = np.pi * index / max(num_classes, 1) + rng.normal(0, 0.08)
    frequency = (2.0 + index % 4) * rng.uniform(0.85, 1.15) * 2 * np.pi
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shift = rng.uniform(-0.125, 0.125, 2)
    phase = ((xs + shift[0]) * np.cos(angle) + (ys + shift[1]) * np.sin(angle)) * frequency
    shade = 0.75 + 0.15 * np.sin(phase + rng.uniform(0, 2 * np.pi)) + 0.12 * smooth_noise(size, rng)
    (cy, cx), (ry, rx) = rng.uniform(0.2, 0.8, 2), rng.uniform(0.1, 0.3, 2)
    shade *= np.where(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1, rng.uniform(0.5, 0.8), 1.0)
    colour = class_colour(index, num_classes) * rng.uniform(0.85, 1.15)
    pixels = colour[None, None, :] * shade[..., None] + rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_sample_dataset(
    root: Path | str,
    num_classes: int = 3,
    per_split: tuple[int, int, int] = (12, 6, 6),
    size: int = 48,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,valid,test}/NNN.Synthetic_x/*.jpg`` with ``per_split`` images per class in each split.

    The same ``seed`` gives byte-identical files, so tests and demos are reproducible. Returns ``root``.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    if len(per_split) != len(SPLITS) or min(per_split) < 0:
        raise ValueError(f"per_split needs {len(SPLITS)} counts >= 0 (train, valid, test), got {per_split}")
    if size < 8:
        raise ValueError("size must be at least 8 pixels")
    root = Path(root).expanduser()
    rng = np.random.default_rng(seed)
    for split, count in zip(SPLITS, per_split, strict=True):
        for index in range(num_classes):
            folder = root / split / class_folder(index)
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                image = render(index, num_classes, size, rng)
                image.save(folder / f"{split}_{index:03d}_{n:04d}.jpg", quality=int(rng.integers(85, 96)))
    log.info("wrote a %d-class sample dataset to %s", num_classes, root)
    return root

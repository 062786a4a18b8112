"""Decode and hash every file of a dataset once, in a process pool: what ``kennel data check`` judges."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from kennel.data import images  # importing it sets the decompression-bomb limit, in workers too
from kennel.processes import available_cores

DRAFT_SIZE = 256
HASH_SIDE = 16  # a 16 x 16 difference hash: 256 bits


@dataclass(frozen=True)
class FileInfo:
    """One file decoded and hashed (in a worker process); ``error`` is set when it cannot be decoded."""

    path: str
    sha256: str
    format: str | None = None
    mode: str | None = None
    size: tuple[int, int] | None = None
    dhash: bytes | None = None
    colourless: bool = False
    error: str | None = None


def difference_hash(image: Image.Image, side: int = HASH_SIDE) -> bytes:
    """Which of each two neighbouring pixels is brighter, on a tiny grey copy: survives resizing, re-encoding and
    colour edits, so near-duplicates differ in few bits while unrelated photos differ in about half."""
    small = image.convert("L").resize((side + 1, side), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.int16)
    return np.packbits(pixels[:, 1:] > pixels[:, :-1]).tobytes()


def colourless(image: Image.Image, tolerance: int = 8) -> bool:
    """An RGB file whose pixels are all grey: a black-and-white photo saved in colour."""
    pixels = np.asarray(image.resize((32, 32)), dtype=np.int16)
    return bool(np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max() < tolerance)


def inspect_file(path: str) -> FileInfo:
    """Hash and fully decode one file; truncation is an error here even though training may tolerate it."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileInfo(path, "", error=f"cannot read the file ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode, size = image.format, image.mode, image.size
            if fmt == "JPEG":
                image.draft("RGB", (DRAFT_SIZE, DRAFT_SIZE))
            image.load()
            rgb = images.to_rgb(image)
            return FileInfo(path, digest, fmt, mode, size, difference_hash(rgb), mode == "RGB" and colourless(rgb))
    except Image.DecompressionBombError:
        return FileInfo(path, digest, error=f"too large (over {images.MAX_PIXELS:,} pixels)")
    except Exception as exc:  # any decoder failure is a finding about this file, never a crash of the check
        return FileInfo(path, digest, error=str(exc) or type(exc).__name__)


def default_workers() -> int:
    return available_cores()


def inspect_all(
    paths: list[str], workers: int | None, on_progress: Callable[[int, int], None] | None
) -> list[FileInfo]:
    workers = workers or default_workers()
    if workers <= 1 or len(paths) < 64:
        results: Iterable[FileInfo] = map(inspect_file, paths)
        return _with_progress(results, len(paths), on_progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        return _with_progress(pool.map(inspect_file, paths, chunksize=chunk), len(paths), on_progress)


def _with_progress(
    results: Iterable[FileInfo], total: int, on_progress: Callable[[int, int], None] | None
) -> list[FileInfo]:
    done = []
    for info in results:
        done.append(info)
        if on_progress:
            on_progress(len(done), total)
    return done

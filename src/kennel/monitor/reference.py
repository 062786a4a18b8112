"""The reference side of a comparison: the job's own model run over the job's valid split, each photo measured
as a capture line measures a request (top class and probability, dog score, size as stored, brightness of the
decoded photo), so the two sides differ only where the photos or the answers do.

Computing it costs a forward pass over the split, so it is kept beside the page (``monitor-reference.json``),
keyed by the artifact (its backbone and creation time) and by the split's fingerprint (every photo's path,
label and bytes): a second ``kennel monitor`` of the same job reads it back, and a retrained model or a changed
split computes it afresh.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from kennel.atomic import atomic_write_json
from kennel.data.layout import Split
from kennel.monitor.sample import Sample
from kennel.serve.capture import brightness
from kennel.serve.verdicts import dog_verdict

log = logging.getLogger(__name__)

REFERENCE_FILE = "monitor-reference.json"
# Raise when what a reference holds, or how a quantity is measured, changes: older files are then recomputed.
VERSION = 1
BATCH_SIZE = 32

Progress = Callable[[int, int], None]  # (photos done, photos in all)


@dataclass
class Reference:
    sample: Sample
    valid: Path  # the split folder
    photos: int  # image files in the split, readable or not
    unreadable: list[str] = field(default_factory=list)  # files that could not be read (left out)
    seconds: float = 0.0  # what computing it took
    cached: bool = False  # read back from the file rather than computed now


class _Photos(Dataset):
    """The split's photos as the model's input, each measured on the way (decode threads share :attr:`measured`,
    one slot per photo). A photo that cannot be read gives a blank input and no measurement."""

    def __init__(self, split: Split, predictor: Any) -> None:
        self.files = [path for path, _ in split.files]
        self.predictor = predictor
        self.measured: list[tuple[int, int, float] | None] = [None] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as image:  # the header: the size as stored, as a capture reads it as sent
                width, height = image.size
            rgb = self.predictor.load_image(path)  # decoded as the endpoint decodes a request
        except (OSError, ValueError) as exc:
            log.info("reference: %s left out (%s)", path, exc)
            size = self.predictor.input_size
            return torch.zeros(3, size, size), index
        self.measured[index] = (width, height, brightness(rgb))
        return self.predictor.transform(rgb), index


def measure_split(predictor: Any, split: Split, progress: Progress | None = None) -> tuple[Sample, list[str]]:
    """``predictor`` (a :class:`kennel.predictor.Predictor`) over every photo of ``split``: the sample, and the
    files that could not be read."""
    from kennel.inference.pipeline import batches

    photos = _Photos(split, predictor)
    columns: dict[str, list[Any]] = {k: [] for k in ("label", "confidence", "dog_score", "width", "height")}
    columns["brightness"] = []
    done = 0
    for images, indices in batches(photos, BATCH_SIZE):
        outputs = predictor.predict_batch(images)
        predictions = predictor.decode(outputs.logits, 1)
        for row, index in enumerate(indices.tolist()):
            measured = photos.measured[index]
            if measured is None:
                continue
            imagenet = outputs.imagenet_logits[row] if outputs.imagenet_logits is not None else None
            dog = dog_verdict(imagenet)
            columns["label"].append(predictions[row].label)
            columns["confidence"].append(predictions[row].probability)
            columns["dog_score"].append(dog["score"] if dog.get("available", True) else None)
            for key, value in zip(("width", "height", "brightness"), measured, strict=True):
                columns[key].append(value)
        done += len(indices)
        if progress is not None:
            progress(done, len(photos))
    unreadable = [str(path) for path, measured in zip(photos.files, photos.measured, strict=True) if measured is None]
    return Sample.from_columns(columns), unreadable


def reference_key(info: Any, fingerprint: str) -> dict[str, Any]:
    """What a stored reference must match to be used: the artifact, the split, and :data:`VERSION`."""
    return {"version": VERSION, "backbone": info.backbone, "created": info.created, "valid": fingerprint}


def load_reference(
    artifact_dir: Path | str,
    split: Split,
    cache: Path | None,
    progress: Progress | None = None,
    runtime: str = "auto",
) -> Reference:
    """The reference of the artifact in ``artifact_dir`` on ``split``: read from ``cache`` when it holds this
    one, else computed (the model runs on ``runtime``) and written there. A cache that cannot be written is
    said in the log; the reference is still returned."""
    from kennel.artifact import read_info
    from kennel.data.fingerprint import split_fingerprint

    info = read_info(artifact_dir)
    key = reference_key(info, split_fingerprint(split))
    stored = _read(cache, key) if cache is not None else None
    if stored is not None:
        return stored
    from kennel.predictor import Predictor

    started = time.perf_counter()
    predictor = Predictor.load(artifact_dir, runtime=runtime)
    sample, unreadable = measure_split(predictor, split, progress)
    reference = Reference(sample, split.root, len(split), unreadable, time.perf_counter() - started)
    if cache is not None:
        try:
            atomic_write_json(
                cache,
                {
                    "key": key,
                    "valid": str(reference.valid),
                    "photos": reference.photos,
                    "unreadable": unreadable,
                    "seconds": reference.seconds,
                    "columns": sample.to_columns(),
                },
            )
        except OSError as exc:
            log.warning(
                "the monitor's reference could not be kept in %s (%s); the next run computes it again", cache, exc
            )
    return reference


def _read(cache: Path, key: dict[str, Any]) -> Reference | None:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        sample = Sample.from_columns(data["columns"])
        return Reference(
            sample, Path(data["valid"]), int(data["photos"]), list(data["unreadable"]), float(data["seconds"]), True
        )
    except (KeyError, TypeError, ValueError):  # a file from a broken write: compute it again
        return None

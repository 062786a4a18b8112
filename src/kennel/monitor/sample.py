"""A sample of photos as the monitor compares them: one row per photo with what the model answered (its top
class and probability, the dog score) and what the photo was like (its size as sent, its brightness). The
reference (the job's valid split) and the traffic (capture lines) are both read into this one shape."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class Sample:
    """Columns of equal length; a quantity that was not recorded for a photo is NaN (the dog score of a model
    without an ImageNet head, the brightness of a line from before it was captured)."""

    label: np.ndarray  # the top class, str
    confidence: np.ndarray  # the top class's probability
    dog_score: np.ndarray  # the ImageNet dog classes' softmax mass (kennel.serve.verdicts.dog_verdict)
    width: np.ndarray  # pixels, as sent (as stored, for the reference)
    height: np.ndarray
    brightness: np.ndarray  # mean luma, 0 to 1 (kennel.serve.capture.brightness)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def long_side(self) -> np.ndarray:
        return np.fmax(self.width, self.height)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> Sample:
        """From lists by column name (as :meth:`to_columns` writes them, None for NaN)."""
        values = {
            f.name: np.array([_number(v) for v in columns.get(f.name, ())], dtype=float)
            for f in fields(cls)
            if f.name != "label"
        }
        return cls(label=np.array([str(v) for v in columns.get("label", ())], dtype=object), **values)

    def to_columns(self) -> dict[str, list[Any]]:
        """Plain lists by column name, for JSON (NaN written as None)."""
        out: dict[str, list[Any]] = {"label": [str(v) for v in self.label]}
        for f in fields(self):
            if f.name != "label":
                out[f.name] = [None if math.isnan(v) else float(v) for v in getattr(self, f.name)]
        return out

    @classmethod
    def from_lines(cls, lines: Iterable[Mapping[str, Any]]) -> Sample:
        """From capture lines (:mod:`kennel.serve.capture`); a line without predictions is left out."""
        columns: dict[str, list[Any]] = {f.name: [] for f in fields(cls)}
        for line in lines:
            predictions = line.get("predictions") or []
            if not predictions or not isinstance(predictions[0], Mapping):
                continue
            image = line.get("image") if isinstance(line.get("image"), Mapping) else {}
            dog = line.get("dog") if isinstance(line.get("dog"), Mapping) else {}
            columns["label"].append(predictions[0].get("label"))
            columns["confidence"].append(predictions[0].get("probability"))
            columns["dog_score"].append(None if dog.get("available") is False else dog.get("score"))
            for key in ("width", "height", "brightness"):
                columns[key].append(image.get(key))
        return cls.from_columns(columns)

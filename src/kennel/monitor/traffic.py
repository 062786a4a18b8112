"""The traffic side of a comparison: the capture lines of the model being judged, read from a capture folder.

A capture folder may hold lines of several models (an endpoint redeployed with a new one, captures merged).
Lines whose model is not the one judged are left out and counted; when none is of that model, all are
compared all the same, and the comparison says so (:attr:`Traffic.foreign`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel.monitor.sample import Sample
from kennel.serve.capture import capture_files, read_capture_files

if TYPE_CHECKING:
    from kennel.artifact import ArtifactInfo

NAMED_BY = ("name", "version", "alias", "backbone", "created")  # what a line's model may say, in this order


def model_words(model: Any) -> str:
    """How a capture line names its model: ``name dogs, version 3, backbone resnet50``."""
    if not isinstance(model, Mapping):
        return "an unnamed model"
    said = [f"{key} {model[key]}" for key in NAMED_BY if model.get(key) not in (None, "")]
    return ", ".join(said) or "an unnamed model"


def same_model(line: Mapping[str, Any], info: ArtifactInfo, class_names: Set[str]) -> bool:
    """Whether ``line`` can be of the artifact described by ``info``: what its model says agrees (its creation
    time, its backbone) and every class it answered is one of ``class_names``, the artifact's."""
    model = line.get("model") if isinstance(line.get("model"), Mapping) else {}
    for key in ("created", "backbone"):
        if model.get(key) is not None and model[key] != getattr(info, key):
            return False
    labels = {p.get("label") for p in line.get("predictions") or () if isinstance(p, Mapping)}
    return labels <= class_names


@dataclass
class Traffic:
    folder: Path
    files: int
    lines: list[dict[str, Any]]  # the lines compared
    other: int = 0  # lines of another model, left out
    other_models: list[str] = field(default_factory=list)  # how those lines name their models, most common first
    foreign: bool = False  # no line is of the model judged: every line is compared all the same

    @cached_property
    def sample(self) -> Sample:
        return Sample.from_lines(self.lines)

    @property
    def first(self) -> str | None:
        times = [line["time"] for line in self.lines if isinstance(line.get("time"), str)]
        return min(times) if times else None

    @property
    def last(self) -> str | None:
        times = [line["time"] for line in self.lines if isinstance(line.get("time"), str)]
        return max(times) if times else None

    def span(self) -> str:
        """When the lines were captured, as a person reads it: ``2026-05-01 12:00 to 2026-05-02 09:30``."""
        from kennel.jobs import local_minutes

        first, last = local_minutes(self.first), local_minutes(self.last)
        return first or "" if first == last else f"{first} to {last}"

    @property
    def dropped(self) -> int:
        """Records the capture dropped while its writer was behind, at least (each server process counts its
        own, and every line carries its process's count so far)."""
        return max((int(line.get("dropped") or 0) for line in self.lines), default=0)

    @property
    def photos(self) -> int:
        """Lines whose photo was kept (``--capture-photos``)."""
        return sum(1 for line in self.lines if line.get("photo"))

    def latency_ms(self, quantile: float) -> float | None:
        values = [line["latency_ms"] for line in self.lines if isinstance(line.get("latency_ms"), (int, float))]
        return float(np.quantile(values, quantile)) if values else None


def load_traffic(folder: Path | str, info: ArtifactInfo) -> Traffic:
    """The capture lines in ``folder`` of the model described by ``info`` (see the module's docstring)."""
    folder = Path(folder).expanduser()
    files = capture_files(folder)
    lines = read_capture_files(files)
    class_names = set(info.class_names)
    mine, theirs = [], []
    for line in lines:
        (mine if same_model(line, info, class_names) else theirs).append(line)
    others = Counter(model_words(line.get("model")) for line in theirs)
    named = [name for name, _ in others.most_common()]
    if lines and not mine:
        return Traffic(folder, len(files), lines, other=0, other_models=named, foreign=True)
    return Traffic(folder, len(files), mine, other=len(theirs), other_models=named)

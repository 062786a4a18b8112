"""Metrics read from a script's log lines, as SageMaker reads them for a training job's metric definitions: every
match of a definition's regex in a line of stdout or stderr is a point, valued by its first group as a float."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kennel.script.config import MetricDefinition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float
    step: int  # this metric's points so far, from 0: the x-axis of its chart and of a pruner's reports
    t: float  # unix time the line was read

    def to_dict(self) -> dict[str, object]:
        # NaN and infinities are kept as strings: JSON has no number for them.
        value = self.value if math.isfinite(self.value) else str(self.value)
        return {"kind": "script", "name": self.name, "value": value, "step": self.step, "t": round(self.t, 3)}


def point_value(record: dict[str, object]) -> float:
    """The value of a point :meth:`MetricPoint.to_dict` wrote (``"nan"`` back to NaN)."""
    return float(record["value"])


class MetricReader:
    """Turns lines into points. ``counts`` carries on from a resumed job's earlier points, so steps go on."""

    def __init__(self, definitions: Iterable[MetricDefinition], counts: dict[str, int] | None = None) -> None:
        self.definitions = [(d.name, re.compile(d.regex)) for d in definitions]
        self.counts: dict[str, int] = dict(counts or {})
        self.last: dict[str, float] = {}
        self._unreadable: set[str] = set()

    def read(self, line: str) -> list[MetricPoint]:
        points = []
        now = time.time()
        for name, regex in self.definitions:
            for match in regex.finditer(line):
                text = match.group(1)
                try:
                    value = float(text)
                except (TypeError, ValueError):
                    if name not in self._unreadable:  # said once: the regex matches text that is no number
                        self._unreadable.add(name)
                        log.warning("metric %s: %r in %r is not a number; such matches are skipped", name, text, line)
                    continue
                step = self.counts.get(name, 0)
                self.counts[name] = step + 1
                self.last[name] = value
                points.append(MetricPoint(name, value, step, now))
        return points

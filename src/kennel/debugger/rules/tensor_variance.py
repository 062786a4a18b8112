from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class TensorVariance(Rule[Window]):
    """A tensor's variance leaves the bounds the user set (selected only when configured)."""

    min_threshold: float | None = None
    max_threshold: float | None = None
    collections: tuple[str, ...] = ("weights", "biases", "gradients")

    def check(self, window: Window) -> Finding | None:
        if self.min_threshold is None and self.max_threshold is None:
            return self.not_applicable(window, "set debug.rules.TensorVariance.min_threshold or max_threshold")
        save = window.latest
        rows = save.rows(*self.collections)
        if not len(rows):
            return self.not_applicable(window, f"none of the collections {', '.join(self.collections)} is captured")
        variance = save.column("std", rows) ** 2
        low = -np.inf if self.min_threshold is None else self.min_threshold
        high = np.inf if self.max_threshold is None else self.max_threshold
        outside = rows[(variance < low) | (variance > high)]
        if not len(outside):
            return None
        names = [save.names[i] for i in outside]
        return self.issue(
            window,
            f"The variance of {short_list(names)} is outside [{low:g}, {high:g}] "
            f"(from {variance.min():.3g} to {variance.max():.3g})",
            "A variance that grows without bound means the weights diverge: lower optim.lr or raise "
            "optim.weight_decay; one that collapses to nothing means the tensor stopped carrying signal.",
            names,
            lowest_variance=float(variance.min()),
            highest_variance=float(variance.max()),
        )

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class WeightUpdateRatio(Rule[Window]):
    """An optimizer step changes a weight by far too much, or by almost nothing, relative to the weight itself."""

    large_threshold: float = 10.0
    small_threshold: float = 1e-8
    epsilon: float = 1e-9

    def check(self, window: Window) -> Finding | None:
        if window.mode != "TRAIN":
            return None
        save = window.latest
        rows = save.rows("weights", "biases")
        update = save.column("update", rows)
        # A tensor of zeros (a fresh bias) has no size to compare its update with.
        known = np.isfinite(update) & (save.column("norm", rows) > self.epsilon)
        if not known.any():
            return self.not_applicable(
                window, "no weights captured (debug.modes.TRAIN.collections lacks weights and biases)"
            )
        rows, update = rows[known], update[known]
        ratio = update / (save.column("norm", rows) + self.epsilon)
        large = ratio > self.large_threshold
        # A schedule that winds the learning rate down to nothing means tiny updates on purpose.
        small = ratio < self.small_threshold if not window.winding_down(save.lr) else np.zeros_like(large)
        if large.any():
            return self._issue(
                window,
                rows[large],
                f"by up to {ratio.max():.3g}x its own size (more than {self.large_threshold:g}x)",
                f"The steps are far too large: lower optim.lr (the learning rate was {save.lr:.3g} here); keep "
                "optim.warmup_epochs at 1 or more.",
                largest_ratio=float(ratio.max()),
            )
        if small.any():
            return self._issue(
                window,
                rows[small],
                f"by less than {self.small_threshold:g} of its size (smallest ratio {ratio[small].min():.3g})",
                "Those parameters are not learning: check that they get a gradient (not detached, not frozen by "
                f"mistake), raise optim.lr (the learning rate was {save.lr:.3g} here) or optim.backbone_lr_scale.",
                smallest_ratio=float(ratio[small].min()),
            )
        return None

    def _issue(self, window: Window, rows: np.ndarray, how: str, advice: str, **numbers: float) -> Finding:
        save = window.latest
        names = [save.names[i] for i in rows]
        return self.issue(window, f"One step changed {short_list(names)} {how}", advice, names, lr=save.lr, **numbers)

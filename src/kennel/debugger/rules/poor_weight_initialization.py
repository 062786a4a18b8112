from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.rules.dead_relu import RELU_LAYERS
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule

ADVICE = (
    "Check how the model's layers are initialised: a layer set to zeros or to a constant passes no signal. "
    "Use the backbone's pretrained weights (model.pretrained: true) or PyTorch's default initialisation, and "
    "normalise the inputs (the backbone's preprocessing does)."
)


@DEBUGGER_RULES.rule
@dataclass
class PoorWeightInitialization(Rule[Window]):
    """In the first steps, the ReLU layers' inputs differ wildly in variance, the gradients are all nearly
    equal, or the loss does not move at all."""

    threshold: float = 10.0  # largest allowed ratio of activation-input variances across layers
    distribution_range: float = 0.001  # smallest allowed spread (max - min) of the gradients
    patience: int = 5  # steps the loss may stay put
    steps: int = 10  # the rule looks at the first ``steps`` training steps only
    loss_tolerance: float = 1e-4  # relative change below which the loss "does not move"

    def check(self, window: Window) -> Finding | None:
        if window.mode != "TRAIN" or window.step > self.steps:
            return None
        save = window.latest
        return self._variance(window, save) or self._spread(window, save) or self._loss(window)

    def _variance(self, window: Window, save) -> Finding | None:
        # ReLU inputs only, as SageMaker's rule (``.*relu_input``): a tanh or a pooled head legitimately sees a
        # different scale, while the inputs of ReLU layers in a well-initialised network stay comparable.
        rows = save.activations(RELU_LAYERS, "/input")
        if len(rows) < 2:
            return None
        variance = save.column("std", rows) ** 2
        low, high = variance.min(), variance.max()
        ratio = high / low if low > 0 else float("inf")
        if ratio <= self.threshold:
            return None
        flat = [save.names[i] for i in rows[variance <= low * self.threshold]]
        return self.issue(
            window,
            f"The variance of activation inputs differs by {ratio:.3g}x across layers (allowed {self.threshold:g}x); "
            f"lowest in {short_list(flat)}",
            ADVICE,
            flat,
            variance_ratio=ratio,
            lowest_variance=low,
            highest_variance=high,
        )

    def _spread(self, window: Window, save) -> Finding | None:
        rows = save.rows("gradients")
        if not len(rows):
            return None
        spread = float(save.column("max", rows).max() - save.column("min", rows).min())
        if spread >= self.distribution_range:
            return None
        return self.issue(
            window,
            f"All gradients lie within {spread:.3g} of each other (at least {self.distribution_range:g} expected)",
            ADVICE,
            [save.names[i] for i in rows],
            gradient_spread=spread,
        )

    def _loss(self, window: Window) -> Finding | None:
        losses = [v for s, v in window.loss_series("TRAIN") if s < self.steps]
        recent = np.asarray(losses[-(self.patience + 1) :])
        if len(recent) <= self.patience or not np.isfinite(recent).all():
            return None
        change = float(np.ptp(recent) / max(abs(recent.mean()), 1e-12))
        if change >= self.loss_tolerance:
            return None
        return self.issue(
            window,
            f"The loss did not move over {len(recent)} of the first {self.steps} steps (it stayed at "
            f"{recent.mean():.5g}, relative change {change:.2g})",
            ADVICE,
            ["loss"],
            loss=float(recent.mean()),
            relative_change=change,
        )

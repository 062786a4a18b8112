from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class LossNotDecreasing(Rule[Window]):
    """The loss over the last ``num_steps`` steps did not fall below that of the ``num_steps`` before (by
    ``diff_percent``), or rose above it (by ``increase_threshold_percent``). Checks EVAL, where there are enough
    validation passes, then TRAIN.

    A batch's loss is noisy, so a step-by-step comparison would fire on every healthy plateau: the rule compares
    the means of the two windows and fires only when the difference is beyond their noise (``confidence``
    standard errors). A loss that is flat without noise (a model that predicts a constant) has no noise to hide
    in. Near the end of a good run a loss sits at its floor (label smoothing keeps it there) with very little
    noise; a change that is a small share of how far it has fallen already (``min_share_of_fall_percent``) is no
    finding, however many standard errors it is. A loss that never fell is judged on noise alone."""

    num_steps: int = 10
    diff_percent: float = 0.1
    increase_threshold_percent: float = 5.0
    confidence: float = 4.0  # standard errors of the difference between the two windows' means
    min_share_of_fall_percent: float = 10.0
    stop: bool = True  # a loss that rises or cannot move will not recover by itself

    events = frozenset({"steps", "epoch"})

    def check(self, window: Window) -> Finding | None:
        if window.event == "epoch":
            series = [e["valid_loss"] for e in window.epochs if "valid_loss" in e]
            return self._judge(window, "EVAL", series, "validation passes", lambda: series)
        if window.mode == "TRAIN":
            losses = [v for _, v in window.loss_series("TRAIN", last=2 * self.num_steps)]
            # The whole history (up to thousands of steps) is read only where the two windows would fire.
            return self._judge(window, "TRAIN", losses, "steps", lambda: [v for _, v in window.loss_series("TRAIN")])
        return None

    def _judge(
        self, window: Window, mode: str, series: list[float], unit: str, history: Callable[[], list[float]]
    ) -> Finding | None:
        n = self.num_steps
        if len(series) < 2 * n:
            return self.no_data(window, f"{mode} {unit}: {len(series)} so far, of the {2 * n} the rule compares")
        before, now = series[-2 * n : -n], series[-n:]
        if not all(math.isfinite(v) for v in series[-2 * n :]):
            return None  # ExplodingTensor's case
        # Plain Python: on twenty numbers it is several times faster than NumPy, and this runs at every save.
        a, b = sum(before) / n, sum(now) / n
        noise = math.sqrt((_variance(before, a) + _variance(now, b)) / n)
        target = a * (1 - self.diff_percent / 100)
        if b - target <= self.confidence * noise:
            return None
        earlier = [v for v in history()[: -2 * n] if math.isfinite(v)]
        fall = max(earlier, default=a) - a
        fell = fall > self.diff_percent / 100 * a
        if fell and b - a < self.min_share_of_fall_percent / 100 * fall:
            return None  # at its floor: a converged loss
        rising = b > a * (1 + self.increase_threshold_percent / 100)
        what = "rose" if rising else "did not decrease"
        advice = (
            f"Lower optim.lr, e.g. by 10x (the learning rate had reached {window.lr:.3g} here); keep "
            "optim.warmup_epochs at 1 or more."
            if rising
            else "Raise optim.lr if the loss is high; if it is already low, training has converged: fewer epochs "
            "or early_stopping saves the rest of the time."
        )
        return self.issue(
            window,
            f"The {mode} loss {what}: {b:.4g} on average over the last {n} {unit}, {a:.4g} over the {n} before",
            advice,
            ["loss"],
            loss_before=a,
            loss_now=b,
            change_percent=100 * (b - a) / a if a else float("inf"),
            noise=noise,
        )


def _variance(values: list[float], mean: float) -> float:
    return sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)

"""LossNotDecreasing on loss series made to order: a rise or a stall is a finding; a converged loss wobbling at
its floor is not, however little noise it has."""

from __future__ import annotations

from collections import deque

import numpy as np

from kennel.debugger.rules.loss_not_decreasing import LossNotDecreasing
from kennel.debugger.window import Window


def _window(losses: list[float]) -> Window:
    return Window("steps", "TRAIN", len(losses), lr=1e-3, losses={"TRAIN": deque(enumerate(losses))})


def _noise(count: int, scale: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, count)


def test_a_loss_that_rises_after_falling_is_an_issue() -> None:
    fell = list(np.linspace(2.3, 0.5, 100) + _noise(100, 0.01))
    rose = list(np.full(10, 0.5) + _noise(10, 0.01, 1)) + list(np.full(10, 1.5) + _noise(10, 0.01, 2))
    finding = LossNotDecreasing().check(_window(fell + rose))
    assert finding is not None and finding.fired and "rose" in finding.message


def test_a_loss_that_never_moved_is_an_issue() -> None:
    finding = LossNotDecreasing().check(_window([1.0986] * 60))
    assert finding is not None and finding.fired and "did not decrease" in finding.message


def test_a_converged_loss_at_its_floor_is_no_issue_however_quiet() -> None:
    # From ln(4) down to the label-smoothing floor, then a rise of 6% of its value: 2% of how far it fell.
    fell = list(np.linspace(1.39, 0.38, 100))
    floor = list(np.full(10, 0.38) + _noise(10, 0.0005)) + list(np.full(10, 0.403) + _noise(10, 0.0005, 1))
    assert LossNotDecreasing().check(_window(fell + floor)) is None
    # Without the fall before it, the same two windows are a finding: the rise is all the loss did.
    finding = LossNotDecreasing().check(_window(floor))
    assert finding is not None and finding.fired

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import COLUMN, Window
from kennel.findings import Finding
from kennel.rules import Rule

COMPARED = [COLUMN[c] for c in ("mean", "std", "min", "max", "norm")]
NORM = COLUMN["norm"]


@DEBUGGER_RULES.rule
@dataclass
class UnchangedTensor(Rule[Window]):
    """A parameter the optimizer holds has not changed over several saved steps.

    Reductions stand in for the tensor: mean, std, min, max and norm all equal (within rtol and atol) across
    ``num_steps`` saves means the tensor did not change, for any change worth the name moves its norm."""

    num_steps: int = 3  # saved steps
    rtol: float = 1e-5
    atol: float = 1e-8
    collections: tuple[str, ...] = ("weights", "biases")
    # Below this share of its peak learning rate the rule says nothing: at the end of a cosine schedule a
    # backbone group's steps (lr x backbone_lr_scale x a few %) barely move a BatchNorm scale within rtol, and a
    # tensor that never learns (requires_grad off, lr 0) shows long before, while the learning rate is high.
    quiet_below_lr_share: float = 0.1

    def check(self, window: Window) -> Finding | None:
        saves = list(window.history("TRAIN"))[-self.num_steps :]
        if len(saves) < self.num_steps:
            return self.no_data(window, f"{len(saves)} saved TRAIN step(s) so far; the rule compares {self.num_steps}")
        if window.mode != "TRAIN" or window.winding_down(saves[-1].lr, self.quiet_below_lr_share):
            return None
        first, last = saves[0], saves[-1]
        rows = first.rows(*self.collections)
        if not len(rows):
            return None
        if any(save.names != first.names for save in saves[1:]):
            return None  # a different set of tensors: nothing to compare
        # The norms first: in a healthy run every tensor's norm moves, and that settles it for all of them.
        norms = np.stack([save.values[rows, NORM] for save in saves])
        rows = rows[np.isclose(norms[1:], norms[0], self.rtol, self.atol).all(axis=0)]
        if not len(rows):
            return None
        values = np.stack([save.values[rows][:, COMPARED] for save in saves])
        same = np.isclose(values[1:], values[0], self.rtol, self.atol).all(axis=(0, 2))
        if not same.any():
            return None
        names = [first.names[i] for i in rows[same]]
        return self.issue(
            window,
            f"{len(names)} parameter tensor(s) did not change from step {first.step} to {last.step}: "
            f"{short_list(names)}",
            "The optimizer holds them but they do not learn: a parameter with requires_grad off, detached from "
            "the loss, or in a group with lr 0. Freeze layers on purpose with model.freeze; otherwise check the "
            "model's forward and optim.backbone_lr_scale.",
            names,
            unchanged=len(names),
            first_step=first.step,
            last_step=last.step,
        )

"""ExplodingTensor: a loss or a captured tensor holds NaN or infinity; nothing useful comes after that."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.base import Rule, register_rule, sentence, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding


@register_rule("ExplodingTensor")
@dataclass
class ExplodingTensor(Rule):
    only_nan: bool = False  # ignore infinities, fire on NaN only
    stop: bool = True  # a job whose numbers are NaN only burns time

    def check(self, window: Window) -> Finding | None:
        saves = window.history()
        save = saves[-1]
        since = saves[-2].mode_step if len(saves) > 1 else -1
        # The loss of every step since the previous save, not only of saved steps: it costs nothing to look.
        bad_loss = None
        for step, loss in reversed(window.losses.get(window.mode, ())):
            if step <= since:
                break
            if self._bad(loss):
                bad_loss = (step, loss)
        nan, inf = save.column("nan"), save.column("inf")
        rows = np.flatnonzero((nan > 0) | (inf > 0 if not self.only_nan else False))
        if bad_loss is None and not len(rows):
            return None
        tensors = [save.names[i] for i in rows]
        what = []
        if bad_loss is not None:
            what.append(f"the {window.mode} loss became {bad_loss[1]} at step {bad_loss[0]}")
        if len(rows):
            what.append(f"{len(rows)} tensor(s) hold NaN or infinity: {short_list(tensors)}")
        numbers = {"nan_values": nan[rows].sum(), "inf_values": inf[rows].sum(), "lr": save.lr}
        if bad_loss is not None:
            numbers["loss"] = bad_loss[1]
        return self.finding(
            window,
            sentence("; ".join(what)),
            f"Training diverged. Lower optim.lr, e.g. by 10x (the learning rate had reached {save.lr:.3g} here); keep "
            "optim.warmup_epochs at 1 or more; look for broken photos with `kennel data check`.",
            (["loss"] if bad_loss is not None else []) + tensors,
            **numbers,
        )

    def _bad(self, value: float) -> bool:
        return math.isnan(value) or (not self.only_nan and math.isinf(value))

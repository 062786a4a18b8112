from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import LOSS_EVERY, Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class ExplodingTensor(Rule[Window]):
    """A loss or a captured tensor holds NaN or infinity; nothing useful comes after that."""

    only_nan: bool = False  # ignore infinities, fire on NaN only
    stop: bool = True  # a job whose numbers are NaN only burns time

    events = frozenset({"save", "steps"})

    def check(self, window: Window) -> Finding | None:
        saves = window.history()
        if window.event == "steps":  # the losses of the last steps; their tensors are judged when saved
            since, save = window.step - LOSS_EVERY, None
        else:
            save = saves[-1]
            since = saves[-2].mode_step if len(saves) > 1 else -1
        bad_loss = None
        for step, loss in reversed(window.losses.get(window.mode, ())):
            if step <= since:
                break
            if self._bad(loss):
                bad_loss = (step, loss)
        if save is None:
            return None if bad_loss is None else self._report(window, bad_loss, [], [], [], window.lr)
        nan, inf = save.column("nan"), save.column("inf")
        rows = np.flatnonzero((nan > 0) | (inf > 0 if not self.only_nan else False))
        if bad_loss is None and not len(rows):
            return None
        return self._report(window, bad_loss, [save.names[i] for i in rows], nan[rows], inf[rows], save.lr)

    def _report(self, window: Window, bad_loss, tensors: list[str], nan, inf, lr: float) -> Finding:
        what = []
        if bad_loss is not None:
            what.append(f"the {window.mode} loss became {bad_loss[1]} at step {bad_loss[0]}")
        if tensors:
            what.append(f"{len(tensors)} tensor(s) hold NaN or infinity: {short_list(tensors)}")
        numbers = {"nan_values": float(np.sum(nan)), "inf_values": float(np.sum(inf)), "lr": lr}
        if bad_loss is not None:
            numbers["loss"] = bad_loss[1]
        return self.issue(
            window,
            "; ".join(what),
            f"Training diverged. Lower optim.lr, e.g. by 10x (the learning rate had reached {lr:.3g} here); keep "
            "optim.warmup_epochs at 1 or more; look for broken photos with `kennel data check`.",
            (["loss"] if bad_loss is not None else []) + tensors,
            **numbers,
        )

    def _bad(self, value: float) -> bool:
        return math.isnan(value) or (not self.only_nan and math.isinf(value))

from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class AllZero(Rule[Window]):
    """A tensor is all zeros at consecutive saved steps (a zero-initialised bias is normal only until the first
    update, so one saved step is not enough)."""

    threshold: float = 100.0  # percent of zeros
    patience: int = 2  # consecutive saved steps

    def check(self, window: Window) -> Finding | None:
        saves = window.history()
        if len(saves) < self.patience:
            saved = f"{len(saves)} saved {window.mode} step(s) so far"
            return self.no_data(window, f"{saved}; the rule compares {self.patience} in a row")
        zero = None
        for save in list(saves)[-self.patience :]:
            rows = save.rows("weights", "biases", "gradients", "activations", "inputs")
            now = {save.names[i] for i in rows[save.column("zeros", rows) * 100 >= self.threshold]}
            zero = now if zero is None else zero & now
        if not zero:
            return None
        names = sorted(zero)
        return self.issue(
            window,
            f"{len(names)} tensor(s) are all zeros at {self.patience} saved steps in a row: {short_list(names)}",
            "A layer of zeros passes no signal and, with a ReLU after it, gets no gradient to recover. "
            "Initialise it (PyTorch's defaults, or model.pretrained: true); for inputs, check the data "
            "(`kennel data check`).",
            names,
            tensors_all_zero=len(names),
        )

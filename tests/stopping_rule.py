"""A custom debugger rule for the tests (selected with ``debug.imports: [stopping_rule]``): it finds an issue at
the first saved step of a job whose learning rate is above ``lr_above`` and stops it there, before any
validation pass, as a real rule that stops a job in its first epoch does."""

from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class StopsHighLearningRates(Rule[Window]):
    lr_above: float = 0.1
    stop: bool = True

    def check(self, window: Window) -> Finding | None:
        if window.mode == "TRAIN" and window.lr > self.lr_above:
            return self.issue(window, f"the learning rate {window.lr:g} is above {self.lr_above:g}", "lower optim.lr")
        return None

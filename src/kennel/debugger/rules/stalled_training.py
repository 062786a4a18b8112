from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class StalledTraining(Rule[Window]):
    """No training step has finished for too long (a hung data loader, a deadlock)."""

    threshold: float = 1800.0  # seconds

    events = frozenset({"clock"})

    def clock_interval(self) -> float:
        return min(60.0, self.threshold / 4)

    def check(self, window: Window) -> Finding | None:
        if window.seconds_since_step <= self.threshold:
            return None
        return self.issue(
            window,
            f"No training step has finished for {window.seconds_since_step:.0f} s (allowed {self.threshold:g} s)",
            "Look at what the process is doing (py-spy dump --pid PID); a data loader stuck on a network folder "
            "or a dead worker is the usual cause: try data.workers: 0.",
            [],
            seconds_since_step=window.seconds_since_step,
            threshold=self.threshold,
        )

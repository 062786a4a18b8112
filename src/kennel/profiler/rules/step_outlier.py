from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.engine.clock import PHASES
from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class StepOutlier(Rule[Profile]):
    """A step takes longer than mean + stddev standard deviations (and at least min_slowdown times the median, so
    that jitter on very even steps does not count). The loop's own step time is used, without the observers'."""

    stddev: float = 3.0
    min_slowdown: float = 2.0
    skip_first: int = 1  # steps at each epoch's start left out (loader start-up, warm-up)
    min_steps: int = 10

    def _eligible(self, table: dict[str, np.ndarray]) -> np.ndarray:
        epochs = table["epoch"]
        count = len(epochs)
        starts = np.flatnonzero(np.r_[True, epochs[1:] != epochs[:-1]]) if count else np.array([], dtype=int)
        position = np.arange(count) - np.repeat(starts, np.diff(np.r_[starts, count]))
        return np.isfinite(table["busy"]) & (position >= self.skip_first)

    def outliers(self, profile) -> tuple[np.ndarray, dict[str, float]]:
        table = profile.step_table
        eligible = self._eligible(table)
        busy = table["busy"]
        values = busy[eligible]
        if len(values) < self.min_steps:
            return np.zeros(len(busy), dtype=bool), {"steps": len(values)}
        mean, std, median = float(values.mean()), float(values.std()), float(np.median(values))
        limit = max(mean + self.stddev * std, self.min_slowdown * median)
        marked = eligible & (busy > limit)
        numbers = {"steps": len(values), "mean_ms": 1e3 * mean, "std_ms": 1e3 * std, "limit_ms": 1e3 * limit}
        return marked, numbers

    def check(self, profile):
        marked, numbers = self.outliers(profile)
        if numbers["steps"] < self.min_steps:
            reason = too_few(numbers["steps"], self.min_steps, "timed steps (each epoch's first left out)")
            return self.no_data(profile, reason, **numbers)
        if not marked.any():
            return self.fine(profile, **numbers)
        table = profile.step_table
        slowest = int(np.argmax(np.where(marked, table["busy"], -np.inf)))
        phase = max(PHASES, key=lambda name: np.nan_to_num(table[name][slowest]))
        numbers |= {
            "outliers": int(marked.sum()),
            "slowest_ms": 1e3 * table["busy"][slowest],
            "slowest_step": table["step"][slowest],
        }
        return self.issue(
            profile,
            f"{int(marked.sum())} step(s) took longer than {numbers['limit_ms']:.1f} ms "
            f"(mean {numbers['mean_ms']:.1f} ms); "
            f"the slowest, step {int(table['step'][slowest])}, took {numbers['slowest_ms']:.0f} ms, most of it in "
            f"{phase}",
            "A slow data phase points at a slow file, disk or worker; forward or backward at the machine being "
            "shared or throttled. Rerun with --profile to trace a window of steps.",
            step=int(table["step"][np.argmax(marked)]),
            **numbers,
        )

    def marked(self, profile, finding) -> np.ndarray:
        """The steps beyond the limit ``finding`` was given (the rule may have fired before the last steps)."""
        table = profile.step_table
        return self._eligible(table) & (table["busy"] > finding.numbers.get("limit_ms", np.inf) / 1e3)

    def plot(self, profile, finding, ax):
        limit = {"limit": finding.numbers.get("limit_ms", np.nan) / 1e3}
        plots.step_points(ax, profile, "busy", self.marked(profile, finding), limit)

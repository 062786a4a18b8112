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
    that jitter on very even steps does not count), and the slow steps cost a share of the job worth a look: each
    at least min_excess_ms over the median, together at least min_job_share of the job's time. The loop's own step
    time is used, without the observers'."""

    stddev: float = 3.0
    min_slowdown: float = 2.0
    skip_first: int = 1  # steps at each epoch's start left out (loader start-up, warm-up)
    min_steps: int = 10
    # A few milliseconds, or a share of the job nobody would miss, is no issue however many deviations it is:
    # a shared machine delays the odd step of every job.
    min_excess_ms: float = 50.0
    min_job_share: float = 0.05

    def _eligible(self, table: dict[str, np.ndarray]) -> np.ndarray:
        return np.isfinite(table["busy"]) & ~self.warm_up(table)

    def warm_up(self, table: dict[str, np.ndarray]) -> np.ndarray:
        """The steps left out as warm-up: the first ``skip_first`` of each epoch."""
        epochs = table["epoch"]
        count = len(epochs)
        starts = np.flatnonzero(np.r_[True, epochs[1:] != epochs[:-1]]) if count else np.array([], dtype=int)
        position = np.arange(count) - np.repeat(starts, np.diff(np.r_[starts, count]))
        return position < self.skip_first

    def outliers(self, profile) -> tuple[np.ndarray, dict[str, float]]:
        table = profile.step_table
        eligible = self._eligible(table)
        busy = table["busy"]
        values = busy[eligible]
        if len(values) < self.min_steps:
            return np.zeros(len(busy), dtype=bool), {"steps": len(values)}
        mean, std, median = float(values.mean()), float(values.std()), float(np.median(values))
        limit = max(mean + self.stddev * std, self.min_slowdown * median, median + self.min_excess_ms / 1e3)
        marked = eligible & (busy > limit)
        numbers = {"steps": len(values), "mean_ms": 1e3 * mean, "std_ms": 1e3 * std, "limit_ms": 1e3 * limit}
        if marked.any():
            excess = float((busy[marked] - median).sum())
            job = job_seconds(profile)
            numbers |= {"slow_steps": int(marked.sum()), "excess_s": excess, "job_s": job}
            numbers["job_share"] = excess / job if job > 0 else 1.0
        return marked, numbers

    def check(self, profile):
        marked, numbers = self.outliers(profile)
        if numbers["steps"] < self.min_steps:
            reason = too_few(numbers["steps"], self.min_steps, "timed steps (each epoch's first left out)")
            return self.no_data(profile, reason, **numbers)
        if not marked.any() or numbers["job_share"] < self.min_job_share:
            return self.fine(profile, **numbers)
        table = profile.step_table
        slowest = int(np.argmax(np.where(marked, table["busy"], -np.inf)))
        phase = max(PHASES, key=lambda name: np.nan_to_num(table[name][slowest]))
        numbers |= {
            "slowest_ms": 1e3 * table["busy"][slowest],
            "slowest_step": table["step"][slowest],
        }
        return self.issue(
            profile,
            f"{int(marked.sum())} step(s) took longer than {numbers['limit_ms']:.1f} ms "
            f"(mean {numbers['mean_ms']:.1f} ms), {numbers['excess_s']:.3g} s more than typical steps, "
            f"{numbers['job_share']:.0%} of the job's {numbers['job_s']:.3g} s; "
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
        warm_up = self.warm_up(profile.step_table)
        if self.skip_first and warm_up.any():  # above the limit, perhaps, but never judged: say so on the plot
            table = profile.step_table
            first = "first step" if self.skip_first == 1 else f"first {self.skip_first} steps"
            label = f"not judged: each epoch's {first} (warm-up)"
            ax.plot(table["step"][warm_up], 1e3 * table["busy"][warm_up], "x", color="tab:gray", ms=5, label=label)
            ax.legend(fontsize=8, loc="best")


def job_seconds(profile: Profile) -> float:
    """The job's time so far: its phases from the timeline, or the steps' own time where it has none."""
    phases = sum(profile.phase_seconds().values())
    return phases if phases > 0 else float(np.nansum(profile.step_table["wall"]))

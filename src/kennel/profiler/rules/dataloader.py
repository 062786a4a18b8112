from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class Dataloader(Rule[Profile]):
    """Loader workers outside min_threshold-max_threshold % of the CPU cores. Too few counts only when waiting for
    data takes at least data_share of the step: a head trained on cached features needs no worker at all."""

    min_threshold: float = 70.0  # percent of the cores
    max_threshold: float = 200.0
    data_share: float = 0.2
    window: int = 500  # steps
    min_steps: int = 10

    def check(self, profile):
        workers = profile.context.get("loader_workers")
        if workers is None:  # no loader was described: count the job's child processes instead
            seen = profile.series("workers")
            workers = int(np.nanmax(seen)) if np.isfinite(seen).any() else None
        share, steps = profile.data_share(self.window)
        if workers is None:
            return self.no_data(profile, "no loader described and no worker count sampled yet", steps=steps)
        if steps < self.min_steps:
            return self.no_data(profile, too_few(steps, self.min_steps, "timed steps"), steps=steps)
        cores = profile.cores
        percent = 100.0 * workers / cores
        numbers = {"workers": workers, "cores": cores, "workers_percent_of_cores": percent, "data_share": share}
        if percent > self.max_threshold:
            return self.issue(
                profile,
                f"{workers} loader workers for {cores} cores: they compete with each other and with the training "
                "threads",
                f"Set data.workers to at most {max(1, math.floor(self.max_threshold / 100 * cores))}.",
                **numbers,
            )
        if percent < self.min_threshold and share >= self.data_share:
            wanted = max(1, math.ceil(self.min_threshold / 100 * cores))
            return self.issue(
                profile,
                f"{workers} loader workers for {cores} cores while waiting for data takes {share:.0%} of each step",
                f"Try data.workers={wanted}; on very few cores a worker also takes CPU from the model, so compare "
                "the step time before and after.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        plots.step_points(ax, profile, "busy")
        plots.step_points(ax, profile, "data", color="tab:orange")
        ax.set_title(f"{finding.numbers.get('workers', '?'):g} workers on {profile.cores} cores")

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, missing_gpus, recent, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class LowGPUUtilization(Rule[Profile]):
    """A GPU is under-used (p95 below threshold_p95) or fluctuates (p95 above it while p5 is below threshold_p5)."""

    threshold_p95: float = 70.0
    threshold_p5: float = 10.0
    window: int = 500  # samples
    min_samples: int = 10

    def check(self, profile):
        if reason := missing_gpus(profile, 1):
            return self.not_applicable(profile, reason)
        util = recent(profile, profile.gpu_series("util"), self.window)
        if len(util) < self.min_samples:
            return self.no_data(profile, too_few(len(util), self.min_samples), samples=len(util))
        p95, p5 = np.nanpercentile(util, 95, axis=0), np.nanpercentile(util, 5, axis=0)
        numbers = {f"gpu{i}_p95": p95[i] for i in range(len(p95))} | {f"gpu{i}_p5": p5[i] for i in range(len(p5))}
        low = np.flatnonzero(p95 < self.threshold_p95)
        if len(low):
            return self.issue(
                profile,
                f"GPU {', '.join(map(str, low))} busy at most {p95[low].max():.0f}% (p95) of the time: it waits for "
                "input or work",
                "Raise data.batch_size, add loader workers (data.workers), or keep the backbone frozen with "
                "feature_cache: true so the GPU is not fed photo by photo.",
                **numbers,
            )
        swinging = np.flatnonzero(p5 < self.threshold_p5)
        if len(swinging):
            return self.issue(
                profile,
                f"GPU {', '.join(map(str, swinging))} swings between busy (p95 {p95[swinging].max():.0f}%) and idle "
                f"(p5 {p5[swinging].min():.0f}%): steps stall on input",
                "Raise data.workers, or look at the data phase in the framework breakdown.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        lines = {"p95 threshold": self.threshold_p95, "p5 threshold": self.threshold_p5}
        plots.series(ax, profile, plots.gpu_lines(profile, "util"), "GPU utilisation (%)", lines)

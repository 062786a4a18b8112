from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class OverallSystemUsage(Rule[Profile]):
    """Reports the job's CPU, memory and GPU use (p50, p95, max); never fires."""

    def check(self, profile):
        numbers: dict[str, float] = {}
        metrics = {
            "cpu": profile.series("cpu"),
            "mem": profile.series("mem"),
            "proc_rss_mb": profile.series("proc_rss_mb"),
        }
        gpus = profile.gpu_series("util")
        metrics |= {f"gpu{i}_util": gpus[:, i] for i in range(gpus.shape[1])}
        for name, values in metrics.items():
            values = values[np.isfinite(values)]
            if len(values):
                numbers |= {
                    f"{name}_p50": np.median(values),
                    f"{name}_p95": np.percentile(values, 95),
                    f"{name}_max": values.max(),
                }
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        plots.series(ax, profile, {"CPU": profile.series("cpu"), "memory": profile.series("mem")}, "percent")

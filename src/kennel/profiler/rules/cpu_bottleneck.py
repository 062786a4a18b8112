from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, missing_gpus, recent, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class CPUBottleneck(Rule[Profile]):
    """The CPU is above cpu_threshold while the GPU is below gpu_threshold, for more than threshold % of the time."""

    cpu_threshold: float = 90.0
    gpu_threshold: float = 10.0
    threshold: float = 50.0  # percent of the samples
    window: int = 500
    min_samples: int = 10

    def check(self, profile):
        if reason := missing_gpus(profile, 1):
            return self.not_applicable(profile, reason)
        cpu = recent(profile, profile.series("cpu"), self.window)
        gpu = recent(profile, np.nanmax(profile.gpu_series("util"), axis=1), self.window)
        if len(cpu) < self.min_samples:
            return self.no_data(profile, too_few(len(cpu), self.min_samples), samples=len(cpu))
        share = 100.0 * float(np.mean((cpu > self.cpu_threshold) & (gpu < self.gpu_threshold)))
        numbers = {"bottleneck_percent": share, "cpu_p50": np.nanmedian(cpu), "gpu_p50": np.nanmedian(gpu)}
        if share > self.threshold:
            return self.issue(
                profile,
                f"For {share:.0f}% of the time the CPU was saturated while the GPU idled: preprocessing on the CPU "
                "limits the job",
                "Use the feature cache (model.freeze: all, feature_cache: true), lighter augmentation "
                "(data.augment: light or none), a smaller data.image_size, or more CPU cores.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        values = {"CPU, mean of cores": profile.series("cpu"), **plots.gpu_lines(profile, "util")}
        plots.series(
            ax, profile, values, "percent", {"CPU threshold": self.cpu_threshold, "GPU threshold": self.gpu_threshold}
        )

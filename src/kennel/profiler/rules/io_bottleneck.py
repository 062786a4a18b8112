from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, recent, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class IOBottleneck(Rule[Profile]):
    """I/O wait is above io_threshold (and, on a GPU, the GPU below gpu_threshold) for more than threshold % of
    the time. On a CPU-only job the I/O wait alone decides: the cores wait for the disk instead of computing."""

    io_threshold: float = 50.0
    gpu_threshold: float = 10.0
    threshold: float = 50.0  # percent of the samples
    window: int = 500
    min_samples: int = 10

    def check(self, profile):
        iowait = recent(profile, profile.series("iowait"), self.window)
        if len(iowait) < self.min_samples:
            return self.no_data(profile, too_few(len(iowait), self.min_samples), samples=len(iowait))
        waiting = iowait > self.io_threshold
        if profile.gpu_count:
            waiting &= recent(profile, np.nanmax(profile.gpu_series("util"), axis=1), self.window) < self.gpu_threshold
        share = 100.0 * float(np.mean(waiting))
        numbers = {"bottleneck_percent": share, "iowait_p95": np.nanpercentile(iowait, 95)}
        if share > self.threshold:
            return self.issue(
                profile,
                f"For {share:.0f}% of the time the job waited on I/O: the photos are read faster than the disk "
                "delivers them",
                "Copy the dataset to a local SSD or into memory (/dev/shm), or train on cached features "
                "(model.freeze: all, feature_cache: true), which reads the photos once.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        values = {"I/O wait": profile.series("iowait"), **plots.gpu_lines(profile, "util")}
        plots.series(ax, profile, values, "percent", {"I/O wait threshold": self.io_threshold})

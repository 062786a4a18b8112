from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, missing_gpus, recent, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class BatchSize(Rule[Profile]):
    """CPU, GPU and GPU memory are all below their p95 thresholds: the batch is too small to use the machine."""

    cpu_threshold_p95: float = 70.0
    gpu_threshold_p95: float = 70.0
    gpu_memory_threshold_p95: float = 70.0
    window: int = 500
    min_samples: int = 10

    def check(self, profile):
        if reason := missing_gpus(profile, 1):
            return self.not_applicable(profile, reason)
        cpu = recent(profile, profile.series("cpu"), self.window)
        if len(cpu) < self.min_samples:
            return self.no_data(profile, too_few(len(cpu), self.min_samples), samples=len(cpu))
        gpu = recent(profile, np.nanmax(profile.gpu_series("util"), axis=1), self.window)
        memory = recent(profile, np.nanmax(profile.gpu_series("mem"), axis=1), self.window)
        numbers = {
            "cpu_p95": np.nanpercentile(cpu, 95),
            "gpu_p95": np.nanpercentile(gpu, 95),
            "gpu_memory_p95": np.nanpercentile(memory, 95),
        }
        if (
            numbers["cpu_p95"] < self.cpu_threshold_p95
            and numbers["gpu_p95"] < self.gpu_threshold_p95
            and numbers["gpu_memory_p95"] < self.gpu_memory_threshold_p95
        ):
            size = profile.context.get("batch_size") or "the batch size"
            return self.issue(
                profile,
                "Neither the CPU, the GPU nor its memory is near busy",
                f"Raise data.batch_size (now {size}), and scale optim.lr with it (linearly is a common start).",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        values = {
            "CPU, mean of cores": profile.series("cpu"),
            **plots.gpu_lines(profile, "util"),
            **plots.gpu_lines(profile, "mem"),
        }
        plots.series(ax, profile, values, "percent", {"p95 thresholds": self.gpu_threshold_p95})

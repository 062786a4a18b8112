from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.rules.base import Rule, recent, register_rule


@register_rule
@dataclass(frozen=True)
class LoadBalancing(Rule):
    """The GPUs' mean utilisation differs by more than threshold (as a fraction of the busiest) over the window."""

    threshold: float = 0.5
    window: int = 500
    min_samples: int = 10
    min_gpus = 2

    def check(self, profile):
        util = recent(profile, profile.gpu_series("util"), self.window)
        if len(util) < self.min_samples:
            return self.fine(profile, {"samples": len(util)})
        means = np.nanmean(util, axis=0)
        spread = float((means.max() - means.min()) / max(means.max(), 1e-9))
        numbers = {f"gpu{i}_mean": m for i, m in enumerate(means)} | {"spread": spread}
        if spread > self.threshold:
            return self.found(
                profile,
                numbers,
                f"GPU {int(means.argmin())} works {spread:.0%} less than GPU {int(means.argmax())}: the work is not "
                "shared evenly. Run one process per GPU (torchrun) with a DistributedSampler, and check that "
                "nothing else runs on the busy GPU.",
            )
        return self.fine(profile, numbers)

    def plot(self, profile, finding, ax):
        plots.series(ax, profile, plots.gpu_lines(profile, "util"), "GPU utilisation (%)")

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, missing_gpus, recent, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class LoadBalancing(Rule[Profile]):
    """The job's processes or GPUs do unequal work: over the window, the least busy one works less than the
    busiest by more than threshold (as a fraction of the busiest).

    With several ranks (torchrun) it compares every rank's time per step before the gradient exchange (data,
    transfer, forward): the ranks wait for each other in the exchange, so only that part differs. With several
    GPUs it also compares their utilisation."""

    threshold: float = 0.5
    window: int = 500
    min_samples: int = 10

    def check(self, profile):
        if reason := missing_gpus(profile, 2, ranks=2):
            return self.not_applicable(profile, reason)
        if profile.world_size >= 2:
            finding = self._ranks(profile)
            if finding is not None:
                return finding
        if profile.gpu_count >= 2:
            return self._gpus(profile)
        seen = len(profile.rank_work(self.window))
        reason = f"{seen} of {profile.world_size} ranks have step records so far; the rule compares {self.min_samples}"
        return self.no_data(profile, reason + " or more of each", ranks_seen=seen)

    def _ranks(self, profile):
        work = profile.rank_work(self.window)
        if len(work) < 2 or min(len(s) for s in [profile.steps, *profile.other_ranks.values()]) < self.min_samples:
            return None
        busiest, idlest = max(work, key=work.get), min(work, key=work.get)
        spread = (work[busiest] - work[idlest]) / max(work[busiest], 1e-12)
        numbers = {f"rank{r}_ms": 1000 * s for r, s in sorted(work.items())} | {"spread": spread}
        if spread > self.threshold:
            return self.issue(
                profile,
                f"Rank {busiest} needs {1000 * work[busiest]:.1f} ms per step before the gradient exchange, rank "
                f"{idlest} {1000 * work[idlest]:.1f} ms: every rank waits for rank {busiest}",
                "Check what else runs on its machine or GPU, give its loader more workers, or give it faster storage.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def _gpus(self, profile):
        util = recent(profile, profile.gpu_series("util"), self.window)
        if len(util) < self.min_samples:
            return self.no_data(profile, too_few(len(util), self.min_samples), samples=len(util))
        means = np.nanmean(util, axis=0)
        spread = float((means.max() - means.min()) / max(means.max(), 1e-9))
        numbers = {f"gpu{i}_mean": m for i, m in enumerate(means)} | {"spread": spread}
        if spread > self.threshold:
            return self.issue(
                profile,
                f"GPU {int(means.argmin())} works {spread:.0%} less than GPU {int(means.argmax())}: the work is not "
                "shared evenly",
                "Run one process per GPU (torchrun) with a DistributedSampler, and check that nothing else runs on "
                "the busy GPU.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        if any(k.startswith("rank") for k in finding.numbers):
            work = profile.rank_work(self.window)
            ax.bar([f"rank {r}" for r in sorted(work)], [1000 * work[r] for r in sorted(work)])
            ax.set_ylabel("ms per step before the gradient exchange")
            return
        plots.series(ax, profile, plots.gpu_lines(profile, "util"), "GPU utilisation (%)")

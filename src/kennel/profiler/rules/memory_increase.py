from __future__ import annotations

from dataclasses import dataclass

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, growth, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class MemoryIncrease(Rule[Profile]):
    """The job's processes' resident memory grows by more than increase_percent (and min_mb) during training:
    the host-memory counterpart of GPUMemoryIncrease, for CPU jobs as well."""

    increase_percent: float = 10.0
    min_mb: float = 200.0
    window: int = 10  # samples averaged at each end
    patience: int = 20  # samples skipped at the start of training

    def check(self, profile):
        ends = growth(profile.series("proc_rss_mb")[profile.training_samples()], self.window, self.patience)
        if ends is None:
            samples = int(profile.training_samples().sum())
            return self.no_data(profile, too_few(samples, self.patience + 2 * self.window), samples=samples)
        start, now = ends
        numbers = {
            "rss_start_mb": start,
            "rss_now_mb": now,
            "increase_percent": 100.0 * (now - start) / max(start, 1.0),
        }
        if now - start > self.min_mb and numbers["increase_percent"] > self.increase_percent:
            return self.issue(
                profile,
                f"The job's memory grew from {start:.0f} MB to {now:.0f} MB while training: something accumulates "
                "across steps (tensors kept with their graph, a growing list in an observer, a dataset caching "
                "decoded photos)",
                "Keep only detached numbers (loss.item()), and watch data.workers: each worker holds a copy of what "
                "the dataset caches.",
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        plots.series(ax, profile, {"job processes, resident": profile.series("proc_rss_mb")}, "MB")

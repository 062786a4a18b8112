from __future__ import annotations

from dataclasses import dataclass

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class DataBottleneck(Rule[Profile]):
    """Waiting for data takes more than threshold of the training loop's step time: the input pipeline, not the
    model, sets the pace. The CPU-side counterpart of the GPU rules, for CPU jobs as well."""

    threshold: float = 0.5
    window: int = 500  # steps
    min_steps: int = 10

    def check(self, profile):
        share, steps = profile.data_share(self.window)
        numbers = {"data_share": share, "steps": steps}
        if steps < self.min_steps:
            return self.no_data(profile, too_few(steps, self.min_steps, "timed steps"), **numbers)
        if share <= self.threshold:
            return self.fine(profile, **numbers)
        workers, cores = profile.context.get("loader_workers"), profile.cores
        advice = []
        if workers is not None and workers < cores:
            advice.append(f"Decode in parallel: data.workers={min(cores, 8)} (now {workers}).")
        advice.append(
            "With a frozen backbone, train on cached features (model.freeze: all, feature_cache: true): photos are "
            "decoded once instead of every epoch. Lighter augmentation (data.augment) and smaller photos on disk "
            "make each batch cheaper."
        )
        return self.issue(
            profile,
            f"Waiting for data takes {share:.0%} of each training step: the loader sets the pace, not the model",
            " ".join(advice),
            **numbers,
        )

    def plot(self, profile, finding, ax):
        plots.step_points(ax, profile, "busy")
        plots.step_points(ax, profile, "data", color="tab:orange")
        ax.set_title(f"data: {finding.numbers.get('data_share', 0):.0%} of the step time")

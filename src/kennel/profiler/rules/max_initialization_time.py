from __future__ import annotations

from dataclasses import dataclass

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class MaxInitializationTime(Rule[Profile]):
    """The training loop starts more than threshold_minutes after the job started (data, model, feature cache)."""

    threshold_minutes: float = 20.0

    def check(self, profile):
        limit = 60.0 * self.threshold_minutes
        seconds = profile.initialization_seconds()
        if seconds is None:  # no loop yet: still initializing, or the job failed before it
            if profile.started is None:
                return self.no_data(profile, "the job's start is not recorded yet")
            seconds = profile.last_seen - profile.started
            if seconds > limit:
                return self.issue(
                    profile,
                    f"No training step {seconds / 60:.1f} minutes after the job started",
                    ADVICE,
                    waiting_s=seconds,
                    threshold_s=limit,
                )
            return self.fine(profile, waiting_s=seconds)
        numbers = {"initialization_s": seconds, "threshold_s": limit}
        if seconds > limit:
            return self.issue(
                profile,
                f"The training loop began {seconds / 60:.1f} minutes after the job started",
                ADVICE,
                step=0,
                **numbers,
            )
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        plots.phase_bars(ax, profile, limit=60.0 * self.threshold_minutes)


ADVICE = (
    "Initialization reads the dataset, loads the weights and, for a frozen backbone, computes its features once: "
    "the next job on the same data reads them from the cache in seconds, so keep KENNEL_CACHE on a fast local "
    "disk. Decoding more photos in parallel (data.workers) and smaller photos on disk shorten a cold start."
)

from __future__ import annotations

from dataclasses import dataclass

from kennel.profiler import plots
from kennel.profiler.rules.base import Rule, register_rule


@register_rule
@dataclass(frozen=True)
class MaxInitializationTime(Rule):
    """The training loop starts more than threshold_minutes after the job started (data, model, feature cache)."""

    threshold_minutes: float = 20.0

    def check(self, profile):
        limit = 60.0 * self.threshold_minutes
        seconds = profile.initialization_seconds()
        if seconds is None:  # no loop yet: still initializing, or the job failed before it
            if profile.started is None:
                return self.fine(profile)
            seconds = profile.last_seen - profile.started
            if seconds > limit:
                return self.found(
                    profile,
                    {"waiting_s": seconds, "threshold_s": limit},
                    f"No training step {seconds / 60:.1f} minutes after the job started. " + ADVICE,
                )
            return self.fine(profile, {"waiting_s": seconds})
        numbers = {"initialization_s": seconds, "threshold_s": limit}
        if seconds > limit:
            return self.found(
                profile,
                numbers,
                f"The training loop began {seconds / 60:.1f} minutes after the job started. " + ADVICE,
                step=0,
            )
        return self.fine(profile, numbers)

    def plot(self, profile, finding, ax):
        plots.phase_bars(ax, profile, limit=60.0 * self.threshold_minutes)


ADVICE = (
    "Initialization reads the dataset, loads the weights and, for a frozen backbone, computes its features once: "
    "the next job on the same data reads them from the cache in seconds, so keep KENNEL_CACHE on a fast local "
    "disk. Decoding more photos in parallel (data.workers) and smaller photos on disk shorten a cold start."
)

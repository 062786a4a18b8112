"""What the profiler's rules share: their registry, and reading a profile's samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kennel.rules import RuleRegistry

if TYPE_CHECKING:
    from kennel.profiler.profile import Profile

# The profiler has one event: a check of the profile so far (every profiler.check_every_s, and at the end).
PROFILER_RULES = RuleRegistry("profiler rule", "profiler.rules")


def missing_gpus(profile: Profile, gpus: int, ranks: int = 0) -> str | None:
    """Why a rule that needs ``gpus`` GPUs with metrics (or, when set, ``ranks`` processes) does not apply to
    the job, or None when it does."""
    if ranks and profile.world_size >= ranks:
        return None
    if profile.gpu_count >= gpus:
        return None
    where = "on the CPU" if profile.gpu_count == 0 else f"on {profile.gpu_count} GPU"
    either = f" or {ranks} processes" if ranks else ""
    return f"the rule needs {gpus} GPU(s) with metrics{either}; the job runs {where}"


def too_few(count: int, least: int, what: str = "samples") -> str:
    """The reason for "no data": ``count`` records of the training loop so far, ``least`` needed."""
    return f"{count} {what} of the training loop so far; the rule needs {least}"


def recent(profile: Profile, values: np.ndarray, window: int) -> np.ndarray:
    """The last ``window`` samples of ``values`` taken while the loop trained."""
    return values[profile.training_samples()][-window:]


def growth(values: np.ndarray, window: int, patience: int) -> tuple[float, float] | None:
    """Mean of the first and of the last ``window`` values after skipping ``patience`` (warm-up), or None when
    there are too few to tell."""
    values = values[np.isfinite(values)][patience:]
    if len(values) < 2 * window:
        return None
    return float(values[:window].mean()), float(values[-window:].mean())

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.profile import Profile
from kennel.profiler.rules.common import PROFILER_RULES, growth, missing_gpus, too_few
from kennel.rules import Rule


@PROFILER_RULES.rule
@dataclass
class GPUMemoryIncrease(Rule[Profile]):
    """A GPU's memory use grows by more than increase percentage points from the start of training to now."""

    increase: float = 5.0  # percentage points of the GPU's memory
    window: int = 10  # samples averaged at each end
    patience: int = 20  # samples skipped at the start (the allocator warms up)

    def check(self, profile):
        if reason := missing_gpus(profile, 1):
            return self.not_applicable(profile, reason)
        memory = profile.gpu_series("mem")[profile.training_samples()]
        numbers: dict[str, float] = {}
        grown = []
        for gpu in range(memory.shape[1]):
            ends = growth(memory[:, gpu], self.window, self.patience)
            if ends is not None:
                numbers[f"gpu{gpu}_start"], numbers[f"gpu{gpu}_now"] = ends
                if ends[1] - ends[0] > self.increase:
                    grown.append(gpu)
        if grown:
            worst = max(numbers[f"gpu{g}_now"] - numbers[f"gpu{g}_start"] for g in grown)
            return self.issue(
                profile,
                f"GPU memory grew by {worst:.1f} points during training: something keeps tensors alive across "
                "steps (an observer or metric holding outputs with their graph, a growing list)",
                "Detach what you keep (.detach().cpu()), or lower data.batch_size if the job nears the memory limit.",
                **numbers,
            )
        if not numbers:
            samples = int(np.isfinite(memory).any(axis=1).sum())
            least = self.patience + 2 * self.window
            return self.no_data(profile, too_few(samples, least, "GPU memory samples"), samples=samples)
        return self.fine(profile, **numbers)

    def plot(self, profile, finding, ax):
        plots.series(ax, profile, plots.gpu_lines(profile, "mem"), "GPU memory (%)")

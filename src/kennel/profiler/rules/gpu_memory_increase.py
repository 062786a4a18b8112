from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.profiler import plots
from kennel.profiler.rules.base import Rule, growth, register_rule


@register_rule
@dataclass(frozen=True)
class GPUMemoryIncrease(Rule):
    """A GPU's memory use grows by more than increase percentage points from the start of training to now."""

    increase: float = 5.0  # percentage points of the GPU's memory
    window: int = 10  # samples averaged at each end
    patience: int = 20  # samples skipped at the start (the allocator warms up)
    min_gpus = 1

    def check(self, profile):
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
            return self.found(
                profile,
                numbers,
                f"GPU memory grew by {worst:.1f} points during training: something keeps tensors alive across steps "
                "(an observer or metric holding outputs with their graph, a growing list). Detach what you keep "
                "(.detach().cpu()), or lower data.batch_size if the job nears the memory limit.",
            )
        return self.fine(profile, numbers or {"samples": int(np.isfinite(memory).any(axis=1).sum())})

    def plot(self, profile, finding, ax):
        plots.series(ax, profile, plots.gpu_lines(profile, "mem"), "GPU memory (%)")

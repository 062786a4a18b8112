from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class CheckInputImages(Rule[Window]):
    """The mean of the input images is far from 0, so they were not normalised."""

    threshold_mean: float = 0.2
    threshold_samples: int = 500

    def check(self, window: Window) -> Finding | None:
        if window.inputs_are_images is False:
            return self.not_applicable(window, "the inputs are cached backbone features, not images")
        stats = window.inputs.get(window.mode)
        if stats is None:
            return self.not_applicable(
                window,
                f"no {window.mode} input batches captured (add inputs to debug.modes.{window.mode}.collections)",
            )
        if stats.samples < self.threshold_samples:
            seen = f"{stats.samples} {window.mode} input samples captured so far"
            return self.no_data(window, f"{seen}; the rule judges {self.threshold_samples}", samples=stats.samples)
        mean, samples = stats.mean, stats.samples
        if abs(mean) <= self.threshold_mean:
            return None
        return self.issue(
            window,
            f"The input images average {mean:.3g} over {int(samples)} samples (expected within "
            f"±{self.threshold_mean:g} of 0): they are not normalised",
            "Normalise the images with the backbone's mean and std: kennel's own loaders do (the preprocessing "
            "comes from the backbone's registry entry); a custom dataset or transform must too.",
            ["inputs"],
            input_mean=mean,
            samples=samples,
        )

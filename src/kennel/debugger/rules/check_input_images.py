"""CheckInputImages: the mean of the input images is far from 0, so they were not normalised."""

from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.base import NotApplicable, Rule, register_rule
from kennel.debugger.window import Window
from kennel.findings import Finding


@register_rule("CheckInputImages")
@dataclass
class CheckInputImages(Rule):
    threshold_mean: float = 0.2
    threshold_samples: int = 500

    def check(self, window: Window) -> Finding | None:
        if window.inputs_are_images is False:
            raise NotApplicable("the inputs are cached backbone features, not images")
        stats = window.inputs.get(window.mode)
        if stats is None:
            raise NotApplicable(
                f"no {window.mode} input batches captured (add inputs to debug.modes.{window.mode}.collections)"
            )
        if stats.samples < self.threshold_samples:
            raise NotApplicable(
                f"{stats.samples} input samples captured so far; the rule judges {self.threshold_samples}"
            )
        mean, samples = stats.mean, stats.samples
        if abs(mean) <= self.threshold_mean:
            return None
        return self.finding(
            window,
            f"The input images average {mean:.3g} over {int(samples)} samples (expected within "
            f"±{self.threshold_mean:g} of 0): they are not normalised",
            "Normalise the images with the backbone's mean and std: kennel's own loaders do (the preprocessing "
            "comes from the backbone's registry entry); a custom dataset or transform must too.",
            ["inputs"],
            input_mean=mean,
            samples=samples,
        )

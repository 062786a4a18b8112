from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel import serve_defaults
from kennel.monitor.rules.common import MONITOR_RULES, CategoricalDrift, Focus

DOG, NO_DOG = "dog", "no dog"


@MONITOR_RULES.rule
@dataclass
class NoDogDrift(CategoricalDrift):
    """The share of photos without a dog in traffic differs from the share on the valid photos.

    A photo has no dog when its dog score is under ``threshold``: both sides are judged with this rule's
    threshold, whatever the endpoint's was."""

    threshold: float = serve_defaults.DOG_THRESHOLD

    quantity = "dog verdict"

    def values(self, sample):
        scores = sample.dog_score[np.isfinite(sample.dog_score)]
        return np.where(scores >= self.threshold, DOG, NO_DOG).astype(str)

    def check(self, comparison):
        for side, sample in (("the job's model", comparison.reference), ("the captured answers", comparison.traffic)):
            if len(sample) and not np.isfinite(sample.dog_score).any():
                return self.not_applicable(
                    comparison, f"{side} give no dog score: the model has no ImageNet head to tell dogs from the rest"
                )
        return super().check(comparison)

    def focus(self, reference, traffic, shares=None):
        return Focus(NO_DOG, float(np.mean(reference == NO_DOG)), float(np.mean(traffic == NO_DOG)))

    def explain(self, reference, traffic, found):
        _, valid, now = found.focus
        said = f"{now:.0%} of the photos in traffic vs {valid:.0%} on valid (PSI {found.psi:.2f}, "
        said += f"{self.severity(found.psi)} drift)"
        if now > valid:
            return (
                f"More photos show no dog: {said}",
                "the endpoint is sent photos it was not made for: clients should check dog.is_dog before showing a "
                "breed; if such photos are common, add them to the training data as a class of their own",
            )
        return (
            f"Fewer photos show no dog: {said}",
            "the valid photos hold more photos without a dog than the traffic does; nothing to fix unless the valid "
            "split was meant to look like the traffic",
        )

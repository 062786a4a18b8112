from __future__ import annotations

from dataclasses import dataclass

from kennel.monitor.rules.common import MONITOR_RULES, NumericDrift


@MONITOR_RULES.rule
@dataclass
class ConfidenceDrift(NumericDrift):
    """The model's top probability in traffic is distributed otherwise than on the valid photos."""

    quantity = "top probability"
    lower = (
        "Confidence has fallen",
        "retrain with recent photos: serve with --capture-photos, label a sample of what was sent and add it to the "
        "training data",
    )
    higher = (
        "Confidence has risen",
        "the traffic is narrower or easier than the valid photos (fewer classes, repeated photos): check the class "
        "mix before taking the valid accuracy for the accuracy in service",
    )

    def values(self, sample):
        return sample.confidence

from __future__ import annotations

from dataclasses import dataclass

from kennel.monitor.rules.common import MONITOR_RULES, NumericDrift


@MONITOR_RULES.rule
@dataclass
class BrightnessDrift(NumericDrift):
    """The photos' brightness (mean luma, 0 black to 1 white) in traffic differs from the valid photos'."""

    quantity = "brightness"
    lower = (
        "Photos are darker than the valid photos",
        "add darker photos to the training data, or train with data.augment: strong (it varies brightness)",
    )
    higher = (
        "Photos are brighter than the valid photos",
        "add brighter photos to the training data, or train with data.augment: strong (it varies brightness)",
    )

    def values(self, sample):
        return sample.brightness

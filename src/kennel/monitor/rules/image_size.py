from __future__ import annotations

from dataclasses import dataclass

from kennel.monitor.rules.common import MONITOR_RULES, NumericDrift


@MONITOR_RULES.rule
@dataclass
class ImageSizeDrift(NumericDrift):
    """The photos' size (their longer side, as sent) in traffic differs from the valid photos'."""

    quantity = "longer side"
    unit = " px"
    digits = 0
    lower = (
        "Photos are smaller than the valid photos",
        "small photos carry less detail than the model learnt from: ask clients for larger photos, or add photos "
        "of this size to the training data",
    )
    higher = (
        "Photos are larger than the valid photos",
        "the endpoint shrinks them before the model, so size alone costs no accuracy, only upload and decode time: "
        "clients may resize photos before sending them",
    )

    def values(self, sample):
        return sample.long_side

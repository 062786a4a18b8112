"""The monitor's rules: one rule per module, registered by class name in :data:`MONITOR_RULES`, each comparing
one quantity of the captured traffic with the job's valid photos (:mod:`kennel.monitor.drift` says how)."""

from kennel.monitor.rules import (  # noqa: F401  (each module registers its rule)
    brightness,
    class_mix,
    confidence,
    image_size,
    no_dog,
)
from kennel.monitor.rules.common import MONITOR_RULES, CategoricalDrift, DriftRule, NumericDrift

# The order of the page and of the command's table: what the model answers first, then what it was sent.
BUILTIN_RULES = ("ConfidenceDrift", "ClassMixDrift", "NoDogDrift", "BrightnessDrift", "ImageSizeDrift")

__all__ = ["BUILTIN_RULES", "MONITOR_RULES", "CategoricalDrift", "DriftRule", "NumericDrift"]

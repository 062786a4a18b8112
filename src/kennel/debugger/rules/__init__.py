"""The debugger's rules: one small class per file, registered by name in :data:`RULES`.

A custom rule subclasses :class:`Rule` as a dataclass, registers itself with :func:`register_rule`, and runs
when a job's config names it (``debug.rules: {MyRule: {}}``, with ``debug.imports: [my_module]`` so that
``kennel train`` imports it first).
"""

from kennel.debugger.rules.all_zero import AllZero
from kennel.debugger.rules.base import RULES, NotApplicable, Rule, register_rule
from kennel.debugger.rules.check_input_images import CheckInputImages
from kennel.debugger.rules.class_imbalance import ClassImbalance
from kennel.debugger.rules.dead_relu import DeadRelu
from kennel.debugger.rules.exploding_tensor import ExplodingTensor
from kennel.debugger.rules.loss_not_decreasing import LossNotDecreasing
from kennel.debugger.rules.overfit import Overfit
from kennel.debugger.rules.overtraining import Overtraining
from kennel.debugger.rules.poor_weight_initialization import PoorWeightInitialization
from kennel.debugger.rules.saturated_activation import SaturatedActivation
from kennel.debugger.rules.stalled_training import StalledTraining
from kennel.debugger.rules.tensor_variance import TensorVariance
from kennel.debugger.rules.unchanged_tensor import UnchangedTensor
from kennel.debugger.rules.vanishing_gradient import VanishingGradient
from kennel.debugger.rules.weight_update_ratio import WeightUpdateRatio

# The rules every job runs unless its config turns one off. TensorVariance has no default bounds, so it runs
# only where a config sets them; custom rules run where a config names them.
BUILTIN_RULES = tuple(name for name in RULES.names() if name != "TensorVariance")

__all__ = [
    "BUILTIN_RULES",
    "RULES",
    "AllZero",
    "CheckInputImages",
    "ClassImbalance",
    "DeadRelu",
    "ExplodingTensor",
    "LossNotDecreasing",
    "NotApplicable",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "Rule",
    "SaturatedActivation",
    "StalledTraining",
    "TensorVariance",
    "UnchangedTensor",
    "VanishingGradient",
    "WeightUpdateRatio",
    "register_rule",
]

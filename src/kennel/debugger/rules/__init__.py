"""The debugger's rules: one small class per file, registered by name in :data:`DEBUGGER_RULES`.

A custom rule is written like the built-in ones (:mod:`kennel.rules` has the base class)::

    from dataclasses import dataclass
    from kennel.debugger.rules import DEBUGGER_RULES
    from kennel.debugger.window import Window
    from kennel.rules import Rule

    @DEBUGGER_RULES.rule
    @dataclass
    class GradientAboveLimit(Rule[Window]):
        \"\"\"A gradient's largest value is above ``limit``.\"\"\"

        limit: float = 5.0

        def check(self, window):
            save = window.latest
            rows = save.rows("gradients")
            if not len(rows):
                return self.not_applicable(window, "no gradients captured")
            if save.column("max", rows).max() <= self.limit:
                return None
            return self.issue(window, "a gradient is above the limit", "lower optim.lr", ["gradients"])

It runs after each saved step (``events`` chooses others: "steps", "epoch", "clock") when a job's config selects
it, ``debug.rules: {GradientAboveLimit: {limit: 2, stop: true}}``, with ``debug.imports: [my_module]`` so that
``kennel train`` imports the module that registers it first.
"""

from kennel.debugger.rules.all_zero import AllZero
from kennel.debugger.rules.check_input_images import CheckInputImages
from kennel.debugger.rules.class_imbalance import ClassImbalance
from kennel.debugger.rules.common import DEBUGGER_RULES
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
BUILTIN_RULES = tuple(name for name in DEBUGGER_RULES.names() if name != "TensorVariance")

__all__ = [
    "BUILTIN_RULES",
    "DEBUGGER_RULES",
    "AllZero",
    "CheckInputImages",
    "ClassImbalance",
    "DeadRelu",
    "ExplodingTensor",
    "LossNotDecreasing",
    "Overfit",
    "Overtraining",
    "PoorWeightInitialization",
    "SaturatedActivation",
    "StalledTraining",
    "TensorVariance",
    "UnchangedTensor",
    "VanishingGradient",
    "WeightUpdateRatio",
]

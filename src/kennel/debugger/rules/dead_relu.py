from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES, layers_above, none_captured, short_list
from kennel.debugger.window import CaptureOptions, Window
from kennel.findings import Finding
from kennel.rules import Rule

RELU_LAYERS = ("ReLU", "ReLU6")


@DEBUGGER_RULES.rule
@dataclass
class DeadRelu(Rule[Window]):
    """Most units of a ReLU layer output zero for (almost) every input of a batch."""

    threshold_inactivity: float = 1.0  # percent: a unit active for less of a batch than this is dead
    threshold_layer: float = 50.0  # percent of a layer's units dead before the rule fires

    def configure(self, options: CaptureOptions) -> None:
        options.inactivity = self.threshold_inactivity / 100

    def check(self, window: Window) -> Finding | None:
        save = window.latest
        rows = save.activations(RELU_LAYERS, "/output")
        if not len(rows):
            return self.not_applicable(window, none_captured(save, "ReLU outputs"))
        hit = layers_above(save, rows, "dead", self.threshold_layer)
        if hit is None:
            return None
        names, top = hit
        return self.issue(
            window,
            f"{len(names)} ReLU layer(s) have more than {self.threshold_layer:g}% dead units (active for under "
            f"{self.threshold_inactivity:g}% of the batch): {short_list(names)}, up to {top:.0f}%",
            "Units that never activate never learn again. Lower optim.lr (large steps push biases negative), "
            "keep optim.warmup_epochs at 1 or more, and check the layer's initialisation (no large negative bias).",
            names,
            dead_percent=top,
            threshold_layer=self.threshold_layer,
        )

from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES, layers_above, none_captured, short_list
from kennel.debugger.window import CaptureOptions, Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class SaturatedActivation(Rule[Window]):
    """The inputs of a tanh or sigmoid layer sit where its gradient is practically zero."""

    threshold_tanh_min: float = -9.4999
    threshold_tanh_max: float = 9.4999
    threshold_sigmoid_min: float = -23.0
    threshold_sigmoid_max: float = 16.99999
    threshold_layer: float = 50.0  # percent of a layer's inputs saturated before the rule fires

    def configure(self, options: CaptureOptions) -> None:
        options.saturation["Tanh"] = (self.threshold_tanh_min, self.threshold_tanh_max)
        options.saturation["Sigmoid"] = (self.threshold_sigmoid_min, self.threshold_sigmoid_max)

    def check(self, window: Window) -> Finding | None:
        save = window.latest
        rows = save.activations(("Tanh", "Sigmoid"), "/input")
        if not len(rows):
            return self.not_applicable(window, none_captured(save, "tanh or sigmoid inputs"))
        hit = layers_above(save, rows, "saturated", self.threshold_layer)
        if hit is None:
            return None
        names, top = hit
        return self.issue(
            window,
            f"{len(names)} tanh/sigmoid layer(s) have more than {self.threshold_layer:g}% of their inputs in the "
            f"saturated range: {short_list(names)}, up to {top:.0f}%",
            "Saturated units pass no gradient. Normalise the layer's inputs (a BatchNorm before it), lower "
            "optim.lr, or check the initialisation of the layer feeding it (no large bias).",
            names,
            saturated_percent=top,
            threshold_layer=self.threshold_layer,
        )

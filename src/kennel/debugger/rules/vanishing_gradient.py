from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class VanishingGradient(Rule[Window]):
    """Some layers' gradients are so small that those layers no longer learn."""

    threshold: float = 1e-7

    def check(self, window: Window) -> Finding | None:
        save = window.latest
        # Weights only: a bias before a BatchNorm gets no gradient at all (the normalisation cancels it), which
        # says nothing about whether the layer learns.
        rows = np.array([i for i in save.rows("gradients") if not save.names[i].endswith("bias/grad")], dtype=int)
        if not len(rows):
            return self.not_applicable(
                window, "no weight gradients captured (debug.modes.TRAIN.collections lacks gradients)"
            )
        # The root mean square bounds the mean absolute value from above, so RMS < threshold means the mean
        # absolute gradient is below it too: the rule never fires on a gradient that is not that small.
        rms = save.column("norm", rows) / np.sqrt(np.maximum(save.column("numel", rows), 1))
        small = rows[rms < self.threshold]
        if not len(small):
            return None
        names = [save.names[i] for i in small]
        return self.issue(
            window,
            f"The gradients of {len(small)} of {len(rows)} weight tensors are below {self.threshold:g} in "
            f"mean absolute value: {short_list(names)}",
            "Those layers barely learn. Look for saturated activations (SaturatedActivation) or dead ReLUs "
            "before them; raise optim.lr or optim.backbone_lr_scale for a fine-tuned backbone; freeze layers "
            "on purpose with model.freeze instead of letting their gradients vanish.",
            names,
            smallest_rms=float(rms.min()),
            threshold=self.threshold,
        )

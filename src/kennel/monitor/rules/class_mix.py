from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.monitor.rules.common import MONITOR_RULES, CategoricalDrift


@MONITOR_RULES.rule
@dataclass
class ClassMixDrift(CategoricalDrift):
    """The mix of predicted classes in traffic differs from the mix predicted on the valid photos."""

    quantity = "predicted class"

    def values(self, sample):
        return np.asarray(sample.label, dtype=str)

    def explain(self, reference, traffic, found):
        name, valid, now = found.focus
        said = f"{name} is {now:.0%} of the answers in traffic vs {valid:.0%} on valid"
        return (
            f"The predicted class mix has shifted: {said} (PSI {found.psi:.2f}, {self.severity(found.psi)} drift)",
            f"look at what is sent as {name} (serve with --capture-photos): if those photos are other breeds or no "
            "dogs, retrain with recent photos; if the users simply favour some breeds, the valid accuracy per class "
            "says what to expect",
        )

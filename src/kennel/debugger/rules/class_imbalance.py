from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kennel.debugger.rules.common import DEBUGGER_RULES, class_names, short_list
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class ClassImbalance(Rule[Window]):
    """Some classes have far fewer training samples than others, or are mostly mispredicted."""

    threshold_imbalance: float = 10.0  # most / fewest training samples of a class
    threshold_misprediction: float = 0.7  # share of a class's validation samples predicted wrong
    samples: int = 500  # samples seen before judging

    events = frozenset({"epoch"})

    def check(self, window: Window) -> Finding | None:
        classes = window.classes
        if not len(classes.train):
            return self.not_applicable(window, "no class labels seen")
        if classes.train.sum() < self.samples:
            seen = int(classes.train.sum())
            return self.no_data(window, f"{seen} training samples seen so far; the rule judges {self.samples}")
        counts = classes.train
        ratio = counts.max() / counts.min() if counts.min() > 0 else float("inf")
        if ratio > self.threshold_imbalance:
            # The classes each below the most by more than the threshold, the rarest first.
            order = np.argsort(counts, kind="stable")
            rare = class_names(classes, order[counts[order] * self.threshold_imbalance < counts.max()])
            return self.issue(
                window,
                f"The training classes are imbalanced {ratio:.3g} to 1 (allowed {self.threshold_imbalance:g}); "
                f"fewest samples: {short_list(rare)} ({int(counts.min())})",
                "Add photos of the rare classes or remove extra ones of the common classes; `kennel data check` "
                "lists the counts per class.",
                rare,
                imbalance=ratio,
                fewest=float(counts.min()),
                most=float(counts.max()),
            )
        seen, wrong = classes.valid, classes.valid_wrong
        if seen.sum() < self.samples:
            return None
        error = np.divide(wrong, seen, out=np.zeros_like(wrong, dtype=float), where=seen > 0)
        bad = np.flatnonzero(error > self.threshold_misprediction)
        if not len(bad):
            return None
        bad = bad[np.argsort(-error[bad], kind="stable")]  # the worst first: a long list is cut short
        names = class_names(classes, bad)
        return self.issue(
            window,
            f"{len(bad)} class(es) are mispredicted on validation more than {self.threshold_misprediction:.0%} of "
            f"the time: {short_list(names)} (up to {error.max():.0%})",
            "Look at those classes in the job report (per-class table, confused pairs, mistakes): mislabelled or "
            "off-topic photos show there; `kennel data check` finds duplicates across classes. More epochs or a "
            "larger backbone (--model) help a class that is merely hard.",
            names,
            worst_error=float(error.max()),
        )

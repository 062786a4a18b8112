from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


def epochs_since_best(values: list[float], delta: float) -> int:
    """How many values came after the last one that beat every earlier value by more than ``delta``."""
    best, since = float("inf"), 0
    for value in values:
        if value < best - delta:
            best, since = value, 0
        else:
            since += 1
    return since


@DEBUGGER_RULES.rule
@dataclass
class Overtraining(Rule[Window]):
    """Neither the training loss nor the validation loss has improved for a while."""

    patience_train: int = 5  # epochs without a training-loss improvement
    patience_validation: int = 10  # epochs without a validation-loss improvement
    delta: float = 0.01  # the smallest improvement that counts

    events = frozenset({"epoch"})

    def check(self, window: Window) -> Finding | None:
        train = [e["train_loss"] for e in window.epochs if "train_loss" in e]
        valid = [e["valid_loss"] for e in window.epochs if "valid_loss" in e]
        if not valid:
            return self.not_applicable(window, "no validation loss: the job has no validation split")
        stale_train, stale_valid = epochs_since_best(train, self.delta), epochs_since_best(valid, self.delta)
        if stale_train < self.patience_train or stale_valid < self.patience_validation:
            return None
        return self.issue(
            window,
            f"Neither loss has improved by {self.delta:g}: training for {stale_train} epochs, validation for "
            f"{stale_valid}",
            f"Further epochs are wasted: set epochs to about {max(len(valid) - stale_valid, 1)} or early_stopping: 3; "
            "to go further, change the recipe (a larger backbone with --model, fine-tuning with --freeze N).",
            ["loss"],
            epochs_without_train_improvement=stale_train,
            epochs_without_valid_improvement=stale_valid,
        )

from __future__ import annotations

from dataclasses import dataclass

from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.window import Window
from kennel.findings import Finding
from kennel.rules import Rule


@DEBUGGER_RULES.rule
@dataclass
class Overfit(Rule[Window]):
    """The validation loss sits well above the training loss and has stopped improving.

    SageMaker's rule looks at the gap alone; kennel also asks that the validation loss have risen above its best
    so far (by ``min_rise``, relative), because a gap while the validation loss still falls or holds is the
    usual generalisation gap, not overfitting, and a rise within noise is no rise."""

    ratio_threshold: float = 0.1  # (valid loss - train loss) / train loss
    patience: int = 1  # validation passes in a row
    start_step: int = 0
    min_rise: float = 0.02  # relative rise of the validation loss above its best

    events = frozenset({"epoch"})

    def check(self, window: Window) -> Finding | None:
        epochs = [e for e in window.epochs if "valid_loss" in e and "train_loss" in e]
        if not epochs:
            return self.not_applicable(window, "no validation loss: the job has no validation split")
        streak, best = 0, float("inf")
        for epoch in epochs:
            ratio = (epoch["valid_loss"] - epoch["train_loss"]) / max(epoch["train_loss"], 1e-12)
            worse = epoch["valid_loss"] > best * (1 + self.min_rise)
            best = min(best, epoch["valid_loss"])
            counts = epoch.get("global_step", window.step) >= self.start_step
            streak = streak + 1 if counts and worse and ratio > self.ratio_threshold else 0
        if streak < self.patience:
            return None
        last = epochs[-1]
        best_epoch = min(epochs, key=lambda e: e["valid_loss"])
        return self.issue(
            window,
            f"Validation loss {last['valid_loss']:.4g} is {ratio:.0%} above the training loss "
            f"{last['train_loss']:.4g} and has risen from its best, {best:.4g} at epoch {int(best_epoch['epoch'])}",
            f"The model is memorising the training set. The best weights (epoch {int(best_epoch['epoch'])}) are "
            "kept; early_stopping: 2 ends such jobs sooner. More data, stronger augmentation (data.augment: "
            "strong, or feature_views: 3 with a frozen backbone), more model.dropout or optim.weight_decay help.",
            ["loss"],
            ratio=ratio,
            valid_loss=last["valid_loss"],
            train_loss=last["train_loss"],
            best_valid_loss=best,
        )

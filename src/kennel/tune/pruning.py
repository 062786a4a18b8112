"""The observer that connects a training job to its tuning trial: it reports the objective after every epoch and
stops the job, with status ``pruned``, when the study's pruner says the trial is not worth finishing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kennel.engine import LoopState, Observer

if TYPE_CHECKING:
    import optuna


def epoch_metric(objective: str) -> str:
    """The per-epoch metric behind a job metric: ``best_valid_accuracy`` is the best ``valid_accuracy``."""
    return objective.removeprefix("best_")


class TrialPruner(Observer):
    """Reports ``objective`` (its running best for a ``best_*`` objective) as the trial's intermediate value."""

    def __init__(self, trial: optuna.Trial, objective: str, maximize: bool, pruner: str) -> None:
        self.trial = trial
        self.metric = epoch_metric(objective)
        self.running_best = objective != self.metric
        self.better = max if maximize else min
        self.pruner = pruner
        self.best: float | None = None
        self.last: float | None = None  # the last value reported

    def on_epoch_end(self, state: LoopState) -> None:
        value = state.epoch_metrics.get(self.metric)
        if value is None:  # an objective measured once at the end (test_accuracy): nothing to prune on
            return
        if self.running_best:
            value = self.best = value if self.best is None else self.better(self.best, value)
        epoch, self.last = state.epoch + 1, value
        self.trial.report(value, epoch)
        if epoch < state.epochs and self.trial.should_prune():
            reason = f"pruned by the {self.pruner} pruner at epoch {epoch}: {self.metric}={value:.4g}"
            state.request_stop(reason, status="pruned")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")

"""One trial: a job with the trial's values (of the study's kind of trial), watched for pruning, and its
objective told back to the study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kennel.errors import KennelError
from kennel.tune.settings import StudySettings
from kennel.tune.study import StudyRecord

if TYPE_CHECKING:
    import optuna

# Under every trial, beneath the user's own config: the ONNX export (and its check) would add seconds to each of
# many trials whose models nobody serves, and so would the logistic-regression head, which changes no trial's
# value (the loop's best valid accuracy); the retrain of the best config exports and picks its head as usual.
TRIAL_DEFAULTS: dict[str, Any] = {"export_onnx": False, "head": "sgd"}


class ObjectiveError(KennelError, RuntimeError):
    """The objective is not a metric the jobs record: every trial would fail the same way, so the study stops."""

    exit_code = 1


@dataclass
class TrialResult:
    number: int
    state: str  # complete, pruned, failed
    value: float | None
    params: dict[str, Any]
    seconds: float
    job: str | None = None
    note: str = ""  # why it was pruned or failed


def trial_name(study: str, number: int) -> str:
    return f"{study}-t{number:03d}"


def run_trial(study: optuna.Study, trial: optuna.Trial, record: StudyRecord, settings: StudySettings) -> TrialResult:
    """Run one trial of the study's kind (:mod:`kennel.tune.trials`) and tell the study how it went (Ctrl-C
    propagates; the worker marks the trial)."""
    from kennel.tune.trials import trial_kind

    return trial_kind(settings.kind).run(study, trial, record, settings)

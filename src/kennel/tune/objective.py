"""One trial: a full training job with the trial's values, a pruning observer, and the objective told back."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kennel.config import ConfigError, deep_merge
from kennel.errors import KennelError
from kennel.findings import labelled
from kennel.tune.results import ERROR, JOB, JOB_ID, trial_config
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
    """Train the trial's job and tell the study how it went (Ctrl-C propagates; the worker marks the trial)."""
    from optuna.trial import TrialState

    from kennel.job import train
    from kennel.tune.pruning import TrialPruner

    started = time.perf_counter()
    params = settings.space.suggest(trial)
    name = trial_name(record.name, trial.number)
    trial.set_user_attr(JOB, name)

    def result(state: str, value: float | None = None, job: str | None = None, note: str = "") -> TrialResult:
        return TrialResult(trial.number, state, value, params, time.perf_counter() - started, job, note)

    def fail(error: str) -> TrialResult:
        trial.set_user_attr(ERROR, error[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return result("failed", note=error)

    try:
        config = trial_config(deep_merge(TRIAL_DEFAULTS, record.base), params, name)
    except ConfigError as exc:
        return fail(str(exc))
    pruner = TrialPruner(trial, settings.objective, settings.maximize, settings.pruner)
    try:
        with labelled(f"trial {trial.number}"):  # its rules' findings say which trial, among the trial lines
            job = train(config, observers=[pruner], study=record.name, stream=None, progress=False)
    except Exception as exc:
        return fail(f"{type(exc).__name__}: {exc}")
    trial.set_user_attr(JOB_ID, job.id)
    if job.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return result("pruned", pruner.last, job.id, job.stop_reason or "")
    value = job.metrics.get(settings.objective)
    if not isinstance(value, (int, float)) and job.status == "stopped":
        # A rule stopped the trial before it measured the objective (a learning rate that diverges at once):
        # an outcome of these values, recorded with the rule's reason; the study goes on with other trials.
        failed = fail(f"{job.stop_reason or 'stopped'} (before any {settings.objective})")
        failed.job = job.id
        return failed
    if not isinstance(value, (int, float)):
        fail(f"job {job.id} has no metric {settings.objective!r}")
        known = ", ".join(sorted(job.metrics))
        raise ObjectiveError(f"objective {settings.objective!r} is not a metric the trials' jobs record: {known}")
    study.tell(trial, float(value))
    return result("complete", float(value), job.id, job.stop_reason or "")

"""Trials of the ``training`` kind: each one a kennel training job with the trial's values on top of the study's
base training config, and a pruning observer in its loop."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

from kennel.config import ConfigError, deep_merge, dotted_value
from kennel.findings import labelled
from kennel.tune.errors import TuneError
from kennel.tune.objective import TRIAL_DEFAULTS, ObjectiveError, TrialResult, trial_name
from kennel.tune.results import ERROR, JOB, JOB_ID, trial_config, write_best_config
from kennel.tune.space import SearchSpace, SpaceError
from kennel.tune.trials import BestValues, TrialKind

if TYPE_CHECKING:
    import optuna

    from kennel.config import DataConfig, TrainConfig
    from kennel.tune.settings import StudySettings
    from kennel.tune.study import StudyRecord


class TrainingTrials(TrialKind):
    description = "each trial a kennel training job (kennel train) with the trial's values"

    def check_base(self, base: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        """The trials' base config must be valid and name a dataset; every space value must fit on top of it,
        and the weights its backbone needs must be on this machine."""
        under_trials = deep_merge(TRIAL_DEFAULTS, base)
        try:
            config = trial_config(under_trials, {}, "check")
        except ConfigError as exc:
            raise TuneError(str(exc)) from None
        if config.data.root is None and config.data.train is None:
            raise TuneError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
        _check_dataset(config.data)
        try:
            space.check_against(under_trials)
        except SpaceError as exc:
            raise TuneError(str(exc)) from None
        _check_weights(config)
        return config.model_dump(mode="json")

    def check_kept(self, base: dict[str, Any]) -> None:
        """The weights of a study resumed with its own base: they may have left this machine since (a cache
        cleared). A base that no longer validates, or names no dataset, is left to the session to say so."""
        try:
            config = trial_config(deep_merge(TRIAL_DEFAULTS, base), {}, "check")
        except ConfigError:
            return
        if config.data.root is not None or config.data.train is not None:
            _check_weights(config)

    def baseline(self, resolved: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        return space.contains({p: dotted_value(resolved, p) for p in space.parameters})

    def max_epochs(self, base: dict[str, Any], space: SearchSpace) -> int:
        return int(space.upper("epochs", trial_config(base, {}, "check").epochs))

    def prepare(self, record: StudyRecord, stream: TextIO | None) -> None:
        """Compute the frozen backbone's features once, with every core, before workers share them."""
        from kennel.job import warm_feature_cache
        from kennel.tune.request import say

        config = trial_config(deep_merge(TRIAL_DEFAULTS, record.base), {}, record.name)
        started = time.perf_counter()
        try:
            cached = warm_feature_cache(config)
        except ConfigError as exc:
            raise TuneError(str(exc)) from None
        if cached:
            say(stream, f"feature cache ready in {time.perf_counter() - started:.1f} s: trials train the head only")
        if config.tracking:
            init_tracking(record, stream)

    def run(
        self, study: optuna.Study, trial: optuna.Trial, record: StudyRecord, settings: StudySettings
    ) -> TrialResult:
        """Train the trial's job and tell the study how it went."""
        from kennel.job import train
        from kennel.tune.pruning import TrialPruner

        told = StudyTeller.begin(study, trial, record, settings)
        params, name = told.params, told.name
        try:
            config = trial_config(deep_merge(TRIAL_DEFAULTS, record.base), params, name)
        except ConfigError as exc:
            return told.failed(str(exc))
        pruner = TrialPruner(trial, settings.objective, settings.maximize, settings.pruner)
        try:
            with labelled(f"trial {trial.number}"):  # its rules' findings say which trial, among the trial lines
                job = train(config, observers=[pruner], study=record.name, stream=None, progress=False)
        except Exception as exc:
            return told.failed(f"{type(exc).__name__}: {exc}")
        return told.outcome(job, settings.objective, pruner.last)

    def write_best(self, record: StudyRecord, trial: optuna.trial.FrozenTrial) -> BestValues:
        path = write_best_config(record, trial)
        return BestValues(path, f"kennel train --config {path}")

    def base_value(self, record: StudyRecord, parameter: str) -> Any:
        return dotted_value(trial_config(record.base, {}, "base").model_dump(mode="json"), parameter)


class StudyTeller:
    """Tells the study how a trial's job ended, the same way for every kind of trial: pruned, completed with the
    objective's value, stopped by a rule before it measured the objective (an outcome of these values: the study
    goes on), or failed."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, params: dict[str, Any], name: str) -> None:
        self.study, self.trial, self.params, self.name = study, trial, params, name
        self.started = time.perf_counter()

    @classmethod
    def begin(
        cls, study: optuna.Study, trial: optuna.Trial, record: StudyRecord, settings: StudySettings
    ) -> StudyTeller:
        """A trial's start: its values from the study's space, and its job's name, set on the trial before the job
        exists (a trial killed now still names its job)."""
        params = settings.space.suggest(trial)
        name = trial_name(record.name, trial.number)
        trial.set_user_attr(JOB, name)
        return cls(study, trial, params, name)

    def result(self, state: str, value: float | None = None, job: str | None = None, note: str = "") -> TrialResult:
        return TrialResult(self.trial.number, state, value, self.params, time.perf_counter() - self.started, job, note)

    def failed(self, error: str, job: str | None = None) -> TrialResult:
        from optuna.trial import TrialState

        self.trial.set_user_attr(ERROR, error[:2000])
        self.study.tell(self.trial, state=TrialState.FAIL)
        return self.result("failed", job=job, note=error)

    def outcome(self, job, objective: str, last_reported: float | None) -> TrialResult:
        """``job``'s record told to the study; :class:`ObjectiveError` when the objective is no metric it has."""
        from optuna.trial import TrialState

        self.trial.set_user_attr(JOB_ID, job.id)
        if job.status == "pruned":
            self.study.tell(self.trial, state=TrialState.PRUNED)
            return self.result("pruned", last_reported, job.id, job.stop_reason or "")
        value = job.metrics.get(objective)
        if not isinstance(value, (int, float)) and job.status == "stopped":
            return self.failed(f"{job.stop_reason or 'stopped'} (before any {objective})", job.id)
        if not isinstance(value, (int, float)) and job.status == "failed":
            return self.failed(job.error or "failed", job.id)
        if not isinstance(value, (int, float)):
            self.failed(f"job {job.id} has no metric {objective!r}", job.id)
            known = ", ".join(sorted(job.metrics))
            raise ObjectiveError(f"objective {objective!r} is not a metric the trials' jobs record: {known}")
        self.study.tell(self.trial, float(value))
        return self.result("complete", float(value), job.id, job.stop_reason or "")


def init_tracking(record: StudyRecord, stream: TextIO | None) -> None:
    """The MLflow store and the study's experiment, made once before the workers race to make them."""
    from kennel.mlflow_store import init_store
    from kennel.tune.request import say

    try:
        init_store(experiment=record.name)
    except Exception as exc:  # tracking is a mirror; the jobs are recorded in their folders regardless
        say(stream, f"MLflow store unavailable ({exc}); trials will say so and train anyway")


def _check_dataset(data: DataConfig) -> None:
    """The photos must be on this machine before a study exists whose every trial would fail on them."""
    from kennel.data.layout import LayoutError, load_layout

    one_by_one = data.train or data.valid or data.test  # split folders given one by one (SageMaker channels)
    dirs = {s: data.split_dir(s) for s in ("train", "valid", "test")} if one_by_one else None
    try:
        load_layout(data.root, dirs=dirs)
    except (LayoutError, ValueError) as exc:
        raise TuneError(str(exc)) from None


def _check_weights(config: TrainConfig) -> None:
    """Have the weights the trials' backbone needs on this machine before the study runs, as ``kennel train``
    does: weights it can neither find nor download fail in one line (exit 2), not as a study whose every trial
    fails."""
    from kennel.job.build import fetch_job_weights  # PyTorch: only once the rest of the request is known good

    fetch_job_weights(config)

"""What a study's trials add up to: counts by outcome, the best trial, and its training config for a retrain."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_text
from kennel.config import TrainConfig, config_to_yaml, load_config
from kennel.tune.study import StudyRecord

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# User attributes kennel keeps on a trial.
JOB = "kennel.job"  # the trial's training job name (set before it starts)
JOB_ID = "kennel.job_id"  # its id (set when it ends)
ERROR = "kennel.error"
INTERRUPTED = "kennel.interrupted"  # the process stopped (Ctrl-C, SIGKILL): the study runs its values again
RETRY_OF = "kennel.retry_of"  # the interrupted trial whose values this one runs again
WARM_START = "kennel.warm_start"  # copied from another study; not one of this study's trials
BASELINE = "kennel.baseline"  # runs the base configuration's own values
HOST, PID, WORKER = "kennel.host", "kennel.pid", "kennel.worker"

OUTCOMES = ("complete", "pruned", "failed", "running", "waiting", "interrupted", "warm")


def outcome(trial: FrozenTrial) -> str:
    """One of :data:`OUTCOMES`."""
    if trial.user_attrs.get(WARM_START):
        return "warm"
    if trial.user_attrs.get(INTERRUPTED):
        return "interrupted"
    return trial.state.name.lower() if trial.state.name != "FAIL" else "failed"


def count(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    counts = Counter(outcome(t) for t in trials)
    return {name: counts[name] for name in OUTCOMES if counts[name]}


def finished(counts: dict[str, int]) -> int:
    """This study's own trials that ran to an end: completed, pruned or failed."""
    return sum(counts.get(name, 0) for name in ("complete", "pruned", "failed"))


def spent(counts: dict[str, int]) -> int:
    """Trials that use up the budget: finished one way or another, or running now. Interrupted trials run again;
    warm-start trials belong to another study."""
    return finished(counts) + counts.get("running", 0)


def own_completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if outcome(t) == "complete" and t.value is not None]


def best_trial(trials: Sequence[FrozenTrial], maximize: bool) -> FrozenTrial | None:
    """The best of this study's own completed trials (warm-start trials guide the search, but their jobs
    belong to another study)."""
    done = own_completed(trials)
    if not done:
        return None
    return (max if maximize else min)(done, key=lambda t: t.value)


def best_summary(trial: FrozenTrial | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {
        "number": trial.number,
        "value": trial.value,
        "params": dict(trial.params),
        "job": trial.user_attrs.get(JOB_ID) or trial.user_attrs.get(JOB),
    }


def reached_target(best: FrozenTrial | None, target: float | None, maximize: bool) -> bool:
    if best is None or target is None:
        return False
    return best.value >= target if maximize else best.value <= target


def trial_config(base: dict[str, Any], params: dict[str, Any], name: str) -> TrainConfig:
    """The training config of a trial (or of a retrain): ``base`` with the trial's values on top."""
    return load_config(base=base, overrides={**params, "name": name})


def write_best_config(record: StudyRecord, trial: FrozenTrial) -> Path:
    """``best.yaml`` in the study folder: the study's base config with the best trial's values, named
    ``<study>-best``; ``kennel train --config`` takes it as it is."""
    config = trial_config(record.base, dict(trial.params), f"{record.name}-best")
    path = record.path / "best.yaml"
    header = f"# study {record.name}: trial {trial.number}, {record.study_settings.objective} = {trial.value:.6g}\n"
    atomic_write_text(path, header + config_to_yaml(config))
    return path


def with_current_counts(records: list[StudyRecord]) -> list[StudyRecord]:
    """``records`` with the trial counts and best of each study in a database as the database has them now. A
    study shared by several machines gains trials from the others, which this machine's ``study.json`` last saw
    when its own worker stopped. Each database is opened once, however many studies it holds; a study keeps its
    local snapshot when its database cannot be read (the caller still lists the study)."""
    import functools

    import optuna

    from kennel.tune.errors import TuneError
    from kennel.tune.storage import open_database

    @functools.cache
    def database(url: str) -> optuna.storages.BaseStorage | None:
        try:
            return open_database(url)
        except TuneError:  # unreachable: wait for it once, not once per study
            return None

    for record in records:
        storage = database(record.storage) if record.storage else None
        if storage is None:
            continue
        try:
            study = optuna.load_study(study_name=record.name, storage=storage)
        except KeyError:  # the study was deleted from the database
            continue
        trials = study.get_trials(deepcopy=False)
        record.counts = count(trials)
        record.best = best_summary(best_trial(trials, record.study_settings.maximize))
    return records

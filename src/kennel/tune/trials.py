"""Kinds of trial a study can run, by name: ``training`` (each trial a kennel training job; the default) and
``script`` (each trial the user's own script, run by ``kennel run``). A study's kind is fixed for its life
(:class:`~kennel.tune.settings.StudySettings`); the runner, the workers and the console ask the kind for what
differs between them: what the base under every trial is and how it is checked, how a trial runs, and how the
best trial's values are handed back to retrain."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kennel.registry import Registry

if TYPE_CHECKING:
    import optuna

    from kennel.tune.objective import TrialResult
    from kennel.tune.settings import StudySettings
    from kennel.tune.space import SearchSpace
    from kennel.tune.study import StudyRecord


@dataclass(frozen=True)
class BestValues:
    """The best trial's values written for a retrain: the file, the command that retrains with it, and the
    values in the form the trained code takes them (a script's ``--name value`` arguments), where that differs."""

    path: Path
    retrain: str
    arguments: str = ""


class TrialKind:
    """What one kind of study does its own way. Each method raises :class:`~kennel.tune.errors.TuneError` for
    a request it cannot use."""

    description: str = ""

    def check_base(self, base: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        """Check the base under every trial (and the space on top of it) before the study exists; returns the
        base as the trials see it, resolved (its values are the baseline trial's)."""
        raise NotImplementedError

    def check_kept(self, base: dict[str, Any]) -> None:
        """A resumed study's own base: what it needs may have left this machine since."""

    def baseline(self, resolved: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
        """The values of ``space``'s parameters in the resolved base (the first trial tries them)."""
        raise NotImplementedError

    def max_epochs(self, base: dict[str, Any], space: SearchSpace) -> int:
        """The most objective reports a trial can make: the resource a Hyperband pruner splits."""
        raise NotImplementedError

    def prepare(self, record: StudyRecord, stream: TextIO | None) -> None:
        """Before the workers start, once per session (kennel's training computes the feature cache here)."""

    def run(
        self, study: optuna.Study, trial: optuna.Trial, record: StudyRecord, settings: StudySettings
    ) -> TrialResult:
        """Run one trial and tell the study how it went (Ctrl-C propagates; the worker marks the trial)."""
        raise NotImplementedError

    def write_best(self, record: StudyRecord, trial: optuna.trial.FrozenTrial) -> BestValues:
        raise NotImplementedError

    def base_value(self, record: StudyRecord, parameter: str) -> Any:
        """What the base gives ``parameter`` (shown beside the best value)."""
        raise NotImplementedError


ENTRY_POINTS = "kennel.trial_kinds"  # the group in the packages' metadata (pyproject.toml) that names each kind

TRIAL_KINDS: Registry[Callable[[], TrialKind]] = Registry("kind of trial")
_made: dict[str, TrialKind] = {}


@functools.cache  # the entry points are read once
def known_kinds() -> Registry[Callable[[], TrialKind]]:
    """Every kind of trial installed: the packages that provide one (kennel's training, the user's script) name
    it as an entry point, so they depend on tuning and tuning on none of them; a kind's module is imported only
    when a study of that kind runs."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        if point.name not in TRIAL_KINDS:  # an editable and a regular install of one package both list it
            TRIAL_KINDS.register(point.name, lambda point=point: point.load()())
    return TRIAL_KINDS


def trial_kind(name: str) -> TrialKind:
    if name not in _made:
        _made[name] = known_kinds().get(name)()
    return _made[name]

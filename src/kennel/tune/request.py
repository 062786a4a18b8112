"""What a person asks of a tuning job, checked before anything is created: a new study (its space, settings and
base training config), a resumed one (which keeps what defines it), one joined in a shared database, or one
warm-started from another study's trials."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from kennel.config import absolute_paths, deep_merge
from kennel.processes import process_alive
from kennel.tune.errors import TuneError
from kennel.tune.results import BASELINE, JOB_ID, WARM_START, count, finished
from kennel.tune.settings import StudySettings
from kennel.tune.shared import SETTINGS_ATTR, published
from kennel.tune.space import SpaceError, load_space
from kennel.tune.storage import normalized_url, open_database, shown
from kennel.tune.strategies import STRATEGIES, StrategyContext
from kennel.tune.study import StudyRecord, load_study_record, open_study, study_exists
from kennel.validation import one_line

if TYPE_CHECKING:
    import optuna


@dataclass
class TuneRequest:
    """What a person asked for. Fields left out keep a resumed study's values, else the defaults."""

    study: str | None = None
    space: str | Path | None = None  # a shipped space's name or a YAML file
    base: dict[str, Any] | None = None  # the training config under every trial (a config file's mapping + flags)
    settings: dict[str, Any] = field(default_factory=dict)  # StudySettings fields: objective, strategy, ...
    session: dict[str, Any] = field(default_factory=dict)  # SessionSettings fields: trials, parallel, ...
    storage: str | None = None
    warm_start: str | None = None
    worker: bool = False  # join the study in ``storage`` with its stored settings; ``base`` may move the dataset

    def __post_init__(self) -> None:
        if self.storage:
            self.storage = normalized_url(self.storage)
        if self.base is not None:  # the study keeps it: its trials, a resume and best.yaml work from any folder
            self.base = absolute_paths(self.base)


def say(stream: TextIO | None, message: str, fold: bool = True) -> None:
    """A line of the study's progress, folded at its words to the stream's width (:mod:`kennel.lines`); a
    command to copy (``fold=False``) stays on one line."""
    if stream is None:
        return
    if fold:
        from kennel.lines import fitted

        message = fitted(message, stream)
    print(message, file=stream, flush=True)


def validated(model, data: dict[str, Any], what: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise TuneError(f"invalid {what}: {one_line(exc, what)}") from None


def _kind(settings: StudySettings):
    from kennel.tune.trials import trial_kind

    return trial_kind(settings.kind)


def new_study(name: str, folder: Path, request: TuneRequest, stream: TextIO | None) -> StudyRecord:
    if request.base is None:
        raise TuneError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
    try:
        space = load_space(request.space or "default")
    except SpaceError as exc:
        raise TuneError(str(exc)) from None
    settings = validated(StudySettings, {**request.settings, "space": space.model_dump()}, "study settings")
    _check_strategy(settings)
    resolved = _kind(settings).check_base(request.base, space)
    record = StudyRecord(
        name, settings.model_dump(mode="json"), base=request.base, storage=request.storage, study_dir=str(folder)
    )
    study = open_study(record)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is not None:  # another machine created this study in the shared database: join it
        record.settings = stored
        _check_unchanged(record, request)
        settings, space = record.study_settings, record.study_settings.space
        resolved = _kind(settings).check_base(request.base, space)
        say(stream, f"joining study {name} in {shown(request.storage)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(record.study_settings.space.to_yaml())
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, record.settings)
        if request.warm_start:
            record.warm_start = request.warm_start
            added = _warm_start(study, request.warm_start, record)
            say(stream, f"warm start: {added} trial(s) of study {request.warm_start} seed the search")
        if settings.baseline and STRATEGIES.get(settings.strategy).baseline:
            values = _kind(settings).baseline(resolved, space)
            if values:
                study.enqueue_trial(values, user_attrs={BASELINE: True})
    record.save()
    return record


def _check_strategy(settings: StudySettings) -> None:
    """Build the strategy's sampler once, so a space it cannot search fails before the study exists."""
    strategy = STRATEGIES.get(settings.strategy)
    try:
        strategy.build(StrategyContext(settings.space, settings.seed, 1))
    except (SpaceError, ImportError) as exc:
        raise TuneError(f"strategy {settings.strategy}: {exc}") from None


def _check_unchanged(record: StudyRecord, request: TuneRequest) -> None:
    """A resumed study keeps what defines it; asking for something else is a mistake worth stopping for."""
    stored = record.study_settings
    changed = [
        f"{key}={value!r} (the study has {getattr(stored, key)!r})"
        for key, value in request.settings.items()
        if getattr(stored, key) != value
    ]
    if request.space is not None:
        try:
            asked = load_space(request.space)
        except SpaceError as exc:
            raise TuneError(str(exc)) from None
        if asked != stored.space:
            changed.append(f"space {request.space} (the study has its own, in {record.path / 'space.yaml'})")
    if request.storage is not None and request.storage != record.storage:
        changed.append(f"storage {request.storage} (the study uses {record.storage_label()})")
    if request.warm_start is not None and request.warm_start != record.warm_start:
        changed.append("--warm-start (only a new study can be warm-started)")
    if changed:
        raise TuneError(
            f"study {record.name} exists with other settings: {'; '.join(changed)}. Resume it without them, "
            f"or start a new study (--warm-start {record.name} seeds it with these trials)"
        )


def reopened_study(folder: Path, request: TuneRequest, stream: TextIO | None) -> StudyRecord:
    record = load_study_record(folder)
    if record.status == "running" and process_alive(record.pid, record.host):
        raise TuneError(f"study {record.name} is running in process {record.pid} on {record.host}")
    _check_unchanged(record, request)
    kind = _kind(record.study_settings)
    if request.base is not None:
        kind.check_base(request.base, record.study_settings.space)
        record.base = request.base
    else:
        kind.check_kept(record.base)
    say(stream, f"resuming study {record.name}: {finished(record.counts)} trial(s) done")
    return record


def joined_study(name: str, folder: Path, request: TuneRequest, stream: TextIO | None) -> StudyRecord:
    """``kennel tune --worker``: this machine's record of the study in ``request.storage``, rebuilt from what the
    study keeps there (:mod:`kennel.tune.shared`); ``request.base`` may only say where the photos are here."""
    import optuna

    if not request.storage:
        raise TuneError("a worker joins a study in a shared database: pass --storage URL (e.g. postgresql://...)")
    where = shown(request.storage)
    if (folder / "study.json").is_file():
        local = load_study_record(folder)
        if local.storage != request.storage:
            raise TuneError(f"study {name} on this machine uses {local.storage_label()}, not {where}")
        if local.status == "running" and process_alive(local.pid, local.host):
            raise TuneError(f"study {name} is running in process {local.pid} on {local.host}")
    storage = open_database(request.storage)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(optuna.study.get_all_study_names(storage)) or "none"
        raise TuneError(
            f"no study {name!r} in {where} (it holds: {known}); create it first with "
            f"kennel tune --storage URL --study {name} --data DIR"
        ) from None
    stored = published(study)
    if stored is None:
        raise TuneError(
            f"study {name!r} in {where} lacks the settings a worker needs; "
            f"kennel tune --storage URL --study {name} (not --worker) stores them"
        )
    record = StudyRecord(name, stored["settings"], stored["session"], stored["base"], request.storage)
    record.study_dir = str(folder)
    record.base = deep_merge(record.base, request.base or {})
    try:
        _kind(record.study_settings).check_base(record.base, record.study_settings.space)
    except TuneError as exc:
        raise TuneError(f"{exc} (a worker's --data says where the photos are on this machine)") from None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(record.study_settings.space.to_yaml())
    record.save()
    done = finished(count(study.get_trials(deepcopy=False)))
    say(stream, f"joining study {name} in {where}: {done} of {record.session_settings.trials} trial(s) done")
    return record


def _warm_start(study: optuna.Study, source: str, record: StudyRecord) -> int:
    """Copy the finished trials of study ``source`` whose values this space can take."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if study_exists(source):
        source_record = load_study_record(source)
        source_study = open_study(source_record)
        theirs = source_record.study_settings
    else:
        try:
            source_study = optuna.load_study(study_name=source, storage=study._storage)
        except KeyError:
            raise TuneError(f"no study {source!r} to warm-start from (kennel jobs studies lists them)") from None
        theirs = validated(StudySettings, source_study.user_attrs.get(SETTINGS_ATTR, {}), f"study {source}")
    ours = record.study_settings
    if (theirs.objective, theirs.direction) != (ours.objective, ours.direction):
        raise TuneError(
            f"study {source} optimized {theirs.objective} ({theirs.direction}), this one {ours.objective} "
            f"({ours.direction}): its values would mislead the search"
        )
    distributions = ours.space.distributions()
    added = 0
    for trial in source_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        params = ours.space.contains(trial.params)
        if set(params) != set(distributions):
            continue  # the trial lacks a parameter this space tunes, or lies outside its range
        study.add_trial(
            create_trial(
                state=trial.state,
                values=trial.values,
                params=params,
                distributions={name: distributions[name] for name in params},
                intermediate_values=dict(trial.intermediate_values),
                user_attrs={WARM_START: f"{source}#{trial.number}", JOB_ID: trial.user_attrs.get(JOB_ID)},
            )
        )
        added += 1
    return added

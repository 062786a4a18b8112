"""A tuning job from start to end: create or resume the study, warm the feature cache once, run the workers,
then record the outcome and write the best trial's config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from kennel.config import ConfigError, deep_merge
from kennel.jobs import now
from kennel.tune.objective import TRIAL_DEFAULTS, ObjectiveError
from kennel.tune.results import (
    BASELINE,
    JOB_ID,
    WARM_START,
    best_summary,
    best_trial,
    count,
    finished,
    trial_config,
    write_best_config,
)
from kennel.tune.settings import SessionSettings, StudySettings, valid_study_name
from kennel.tune.space import SearchSpace, SpaceError, load_space
from kennel.tune.strategies import STRATEGIES, StrategyContext
from kennel.tune.study import (
    StudyRecord,
    load_study_record,
    open_study,
    process_alive,
    studies_dir,
    study_exists,
    this_host,
)
from kennel.tune.worker import stop_reason, work

if TYPE_CHECKING:
    import optuna

SETTINGS_ATTR = "kennel.settings"  # the study's settings, kept in its storage for machines that join it
WORKER_STOP_S = 30.0  # how long stopped workers get to mark their trials interrupted before being killed


class TuneError(ValueError):
    """A tuning job that cannot start; the message says what to change."""


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


def _say(stream: TextIO | None, message: str) -> None:
    if stream is not None:
        print(message, file=stream, flush=True)


def _validated(model, data: dict[str, Any], what: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in exc.errors())
        raise TuneError(f"invalid {what}: {problems}") from None


def _check_base(base: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The trials' base config must be valid and name a dataset; every space value must fit on top of it."""
    under_trials = deep_merge(TRIAL_DEFAULTS, base)
    try:
        config = trial_config(under_trials, {}, "check")
    except ConfigError as exc:
        raise TuneError(str(exc)) from None
    if config.data.root is None and config.data.train is None:
        raise TuneError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
    try:
        space.check_against(under_trials)
    except SpaceError as exc:
        raise TuneError(str(exc)) from None
    return config.model_dump(mode="json")


def _dotted(config: dict[str, Any], name: str) -> Any:
    node: Any = config
    for part in name.split("."):
        node = node[part]
    return node


def _create(name: str, folder: Path, request: TuneRequest, stream: TextIO | None) -> StudyRecord:
    if request.base is None:
        raise TuneError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
    try:
        space = load_space(request.space or "default")
    except SpaceError as exc:
        raise TuneError(str(exc)) from None
    settings = _validated(StudySettings, {**request.settings, "space": space.model_dump()}, "study settings")
    _check_strategy(settings)
    resolved = _check_base(request.base, space)
    record = StudyRecord(
        name, settings.model_dump(mode="json"), base=request.base, storage=request.storage, study_dir=str(folder)
    )
    study = open_study(record)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is not None:  # another machine created this study in the shared database: join it
        record.settings = stored
        _check_unchanged(record, request)
        settings, space = record.study_settings, record.study_settings.space
        resolved = _check_base(request.base, space)
        _say(stream, f"joining study {name} in {request.storage}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(record.study_settings.space.to_yaml())
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, record.settings)
        if request.warm_start:
            record.warm_start = request.warm_start
            added = _warm_start(study, request.warm_start, record)
            _say(stream, f"warm start: {added} trial(s) of study {request.warm_start} seed the search")
        if settings.baseline and STRATEGIES.get(settings.strategy).baseline:
            values = space.contains({p: _dotted(resolved, p) for p in space.parameters})
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


def _resume(folder: Path, request: TuneRequest, stream: TextIO | None) -> StudyRecord:
    record = load_study_record(folder)
    if record.status == "running" and process_alive(record.pid, record.host):
        raise TuneError(f"study {record.name} is running in process {record.pid} on {record.host}")
    _check_unchanged(record, request)
    if request.base is not None:
        _check_base(request.base, record.study_settings.space)
        record.base = request.base
    _say(stream, f"resuming study {record.name}: {finished(record.counts)} trial(s) done")
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
        theirs = _validated(StudySettings, source_study.user_attrs.get(SETTINGS_ATTR, {}), f"study {source}")
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


def _session(record: StudyRecord, request: TuneRequest, resumed: bool) -> SessionSettings:
    previous = {k: v for k, v in record.session.items() if k not in ("deadline", "threads")}
    session = _validated(SessionSettings, {**previous, **request.session}, "session settings")
    size = STRATEGIES.get(record.study_settings.strategy).size(record.study_settings.space)
    if size is not None and (session.trials > size or ("trials" not in request.session and not resumed)):
        session.trials = size  # a grid holds this many distinct trials
    if session.timeout_s is not None:
        session.deadline = time.time() + session.timeout_s
    if session.parallel > 1:
        session.threads = max(1, (os.cpu_count() or 1) // session.parallel)
    return session


def _warm_cache(record: StudyRecord, stream: TextIO | None) -> None:
    """Compute the frozen backbone's features once, with every core, before workers share them."""
    from kennel.job import warm_feature_cache

    config = trial_config(deep_merge(TRIAL_DEFAULTS, record.base), {}, record.name)
    started = time.perf_counter()
    try:
        cached = warm_feature_cache(config)
    except ConfigError as exc:
        raise TuneError(str(exc)) from None
    if cached:
        _say(stream, f"feature cache ready in {time.perf_counter() - started:.1f} s: trials train the head only")
    if config.tracking:
        from kennel.observers.tracking import init_store

        try:
            init_store(experiment=record.name)
        except Exception as exc:  # tracking is a mirror; the jobs are recorded in their folders regardless
            _say(stream, f"MLflow store unavailable ({exc}); trials will say so and train anyway")


def _run_workers(record: StudyRecord, stream: TextIO | None) -> tuple[str, str | None]:
    """Run the session's workers until they stop; returns the study's status and why."""
    parallel = record.session_settings.parallel
    if parallel == 1:
        try:
            return "completed", work(record.path, 0, stream)
        except KeyboardInterrupt:
            return "stopped", "interrupted"
        except ObjectiveError as exc:
            return "failed", str(exc)
    threads = str(record.session_settings.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [sys.executable, "-m", "kennel.tune", str(record.path)]
    workers = [subprocess.Popen([*command, "--index", str(i)], env=env) for i in range(parallel)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        _stop(workers)
        return "stopped", "interrupted"
    if any(codes):
        return "failed", f"worker exit codes {codes} (their errors are above)"
    return "completed", None


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
    deadline = time.monotonic() + WORKER_STOP_S
    for worker in workers:
        try:
            worker.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _finish(record: StudyRecord, status: str, reason: str | None, started: float, stream: TextIO | None) -> None:
    study = open_study(record)
    trials = study.get_trials(deepcopy=False)
    settings = record.study_settings
    record.counts = count(trials)
    best = best_trial(trials, settings.maximize)
    record.best = best_summary(best)
    record.status = status
    record.stop_reason = reason or stop_reason(trials, record)
    record.ended, record.pid = now(), None
    record.save()
    counts = ", ".join(f"{n} {k}" for k, n in record.counts.items())
    _say(stream, f"study {record.name} {status} after {time.perf_counter() - started:.0f} s: {counts or 'no trials'}")
    if record.stop_reason:
        _say(stream, f"  stopped at: {record.stop_reason}")
    if best is None:
        return
    params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    _say(stream, f"  best trial {best.number}: {settings.objective}={best.value:.4f}  {params}")
    _say(stream, f"  job {best.user_attrs.get(JOB_ID)}")
    path = write_best_config(record, best)
    _say(stream, f"  best config: {path}  (retrain: kennel train --config {path})")


def new_study_name() -> str:
    return f"study-{datetime.now():%Y%m%d-%H%M%S}"


def tune(request: TuneRequest, stream: TextIO | None = sys.stdout) -> StudyRecord:
    """Run (or resume) a tuning job; returns its record. Raises :class:`TuneError` when it cannot start."""
    name = request.study or new_study_name()
    try:
        valid_study_name(name)
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    folder = studies_dir() / name
    resumed = (folder / "study.json").is_file()
    record = _resume(folder, request, stream) if resumed else _create(name, folder, request, stream)
    record.session = _session(record, request, resumed).model_dump(mode="json")
    record.status, record.started, record.ended, record.stop_reason = "running", now(), None, None
    record.pid, record.host = os.getpid(), this_host()
    record.save()
    settings, session = record.study_settings, record.session_settings
    _say(
        stream,
        f"study {name}: {settings.strategy}, {settings.pruner} pruning, {session.trials} trials, "
        f"{session.parallel} worker(s); {settings.objective} ({settings.direction}); {record.storage_label()}",
    )
    started = time.perf_counter()
    try:
        _warm_cache(record, stream)
        status, reason = _run_workers(record, stream)
    except KeyboardInterrupt:
        _finish(record, "stopped", "interrupted", started, stream)
        raise
    except BaseException as exc:
        _finish(record, "failed", f"{type(exc).__name__}: {exc}", started, stream=None)
        raise
    _finish(record, status, reason, started, stream)
    return record

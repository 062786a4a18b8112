"""A tuning job from start to end: create, resume or join the study, prepare its trials once (kennel's training
warms the feature cache), run the workers, then record the outcome and write the best trial's values."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import TextIO

from kennel.jobs import now
from kennel.processes import this_host
from kennel.tune.objective import ObjectiveError
from kennel.tune.request import TuneError, TuneRequest, joined_study, new_study, reopened_study, say, validated
from kennel.tune.results import JOB_ID, best_summary, best_trial, count
from kennel.tune.settings import SessionSettings, valid_study_name
from kennel.tune.shared import publish
from kennel.tune.strategies import STRATEGIES
from kennel.tune.study import StudyRecord, open_study, studies_dir
from kennel.tune.trials import trial_kind
from kennel.tune.worker import stop_reason, work

WORKER_STOP_S = 30.0  # how long stopped workers get to mark their trials interrupted before being killed


def _session(record: StudyRecord, request: TuneRequest, resumed: bool) -> SessionSettings:
    if request.worker:  # the session its creator started, deadline included; only the workers here are ours
        joined = {**record.session, "threads": None, **request.session}
        session = validated(SessionSettings, joined, "session settings")
    else:
        previous = {k: v for k, v in record.session.items() if k not in ("deadline", "threads")}
        session = validated(SessionSettings, {**previous, **request.session}, "session settings")
        size = STRATEGIES.get(record.study_settings.strategy).size(record.study_settings.space)
        if size is not None and (session.trials > size or ("trials" not in request.session and not resumed)):
            session.trials = size  # a grid holds this many distinct trials
        if session.timeout_s is not None:
            session.deadline = time.time() + session.timeout_s
    if session.parallel > 1:
        session.threads = max(1, (os.cpu_count() or 1) // session.parallel)
    return session


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
    say(stream, f"study {record.name} {status} after {time.perf_counter() - started:.0f} s: {counts or 'no trials'}")
    if record.stop_reason:
        say(stream, f"  stopped at: {record.stop_reason}")
    if best is None:
        return
    params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    say(stream, f"  best trial {best.number}: {settings.objective}={best.value:.4f}  {params}")
    say(stream, f"  job {best.user_attrs.get(JOB_ID)}")
    written = trial_kind(settings.kind).write_best(record, best)
    say(stream, f"  best config: {written.path}")
    if written.arguments:  # what a person copies stays on one line
        say(stream, f"  arguments: {written.arguments}", fold=False)
    say(stream, f"  retrain: {written.retrain}", fold=False)


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
    if request.worker:
        if request.study is None:
            raise TuneError("a worker joins an existing study: name it with --study NAME")
        record = joined_study(name, folder, request, stream)
    elif resumed:
        record = reopened_study(folder, request, stream)
    else:
        record = new_study(name, folder, request, stream)
    record.session = _session(record, request, resumed).model_dump(mode="json")
    record.status, record.started, record.ended, record.stop_reason = "running", now(), None, None
    record.pid, record.host = os.getpid(), this_host()
    record.save()
    study = open_study(record)
    if not request.worker:  # what a worker joining from another machine reads (the latest session's budget)
        publish(study, record)
    settings, session = record.study_settings, record.session_settings
    say(
        stream,
        f"study {name}: {settings.strategy}, {settings.pruner} pruning, {session.trials} trials, "
        f"{session.parallel} worker(s); {settings.objective} ({settings.direction}); {record.storage_label()}",
    )
    started = time.perf_counter()
    try:
        # A study already done (joined late, or resumed with nothing left) needs no features.
        if stop_reason(study.get_trials(deepcopy=False), record) is None:
            trial_kind(settings.kind).prepare(record, stream)
        status, reason = _run_workers(record, stream)
    except KeyboardInterrupt:
        _finish(record, "stopped", "interrupted", started, stream)
        raise
    except BaseException as exc:
        _finish(record, "failed", f"{type(exc).__name__}: {exc}", started, stream=None)
        raise
    _finish(record, status, reason, started, stream)
    return record

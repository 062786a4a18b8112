"""A tuning worker: takes trials from the shared study until a stopping criterion is met.

``kennel tune --parallel K`` starts K of these (``python -m kennel.tune STUDY_DIR --index I``); with one
worker the runner calls :func:`work` in its own process. Workers coordinate only through the study's storage and
its claim (:mod:`kennel.tune.claim`), so they may also run on other machines against one PostgreSQL database.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from kennel.lines import WIDTH, fold, width
from kennel.mlflow_store import RUN_STATUS, end_abandoned_run
from kennel.processes import process_alive, this_host
from kennel.tune.claim import claim_lock
from kennel.tune.objective import ObjectiveError, TrialResult, run_trial
from kennel.tune.pruners import PRUNERS, PrunerContext
from kennel.tune.results import (
    HOST,
    INTERRUPTED,
    JOB,
    PID,
    RETRY_OF,
    WORKER,
    best_summary,
    best_trial,
    count,
    reached_target,
    spent,
)
from kennel.tune.settings import SessionSettings
from kennel.tune.strategies import STRATEGIES, StrategyContext
from kennel.tune.study import StudyRecord, load_study_record, open_study
from kennel.tune.trials import trial_kind

if TYPE_CHECKING:
    import optuna


def build_study(record: StudyRecord, worker: int) -> optuna.Study:
    """The study with this worker's sampler (its own seed) and the study's pruner."""
    settings, session = record.study_settings, record.session_settings
    # Each worker and each session draws its own random numbers: equal seeds would propose equal trials.
    seed = settings.seed + 1000 * worker + 7919 * sum(record.counts.values())
    if record.storage:
        # Machines sharing a database count their workers from 0 alike and may join at the same trial count:
        # the host and process tell them apart (a one-machine study stays reproducible from its seed).
        seed = (seed + zlib.crc32(f"{this_host()}:{os.getpid()}".encode())) % 2**32  # NumPy's seed range
    strategy = STRATEGIES.get(settings.strategy)
    sampler = strategy.build(StrategyContext(settings.space, seed, session.trials))
    max_epochs = trial_kind(settings.kind).max_epochs(record.base, settings.space)
    pruner = PRUNERS.get(settings.pruner).build(PrunerContext(max_epochs, session.trials))
    return open_study(record, sampler, pruner)


def recover(study: optuna.Study) -> list[int]:
    """Trials left running by a dead process on this machine are interrupted; every interrupted trial not yet
    retried gets its values queued again. Returns the numbers of the trials queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        mine = trial.state == TrialState.RUNNING and trial.user_attrs.get(HOST) == this_host()
        if mine and not process_alive(trial.user_attrs.get(PID), this_host()):
            interrupt(study, trial._trial_id)
            _close_job(trial.user_attrs.get(JOB), trial.number)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    queued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get(INTERRUPTED) and trial.number not in retried:
            study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
            queued.append(trial.number)
    return queued


def interrupt(study: optuna.Study, trial_id: int) -> None:
    """Mark a running trial interrupted and failed; the next claim queues its values again."""
    from optuna.trial import TrialState

    storage = study._storage
    if storage.get_trial(trial_id).state == TrialState.RUNNING:
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _close_job(name: str | None, number: int) -> None:
    """The killed trial's job: a record that still says created or running (the kill can fall before the job's
    first step) says what happened to it, and the MLflow run the kill left RUNNING (even after the record's last
    write) is ended with the record's status."""
    from kennel.jobs import JobNotFound, load_job, now

    try:
        job = load_job(name) if name else None
    except JobNotFound:
        return
    if job is None:
        return
    if job.status in ("created", "running"):
        job.status, job.ended = "stopped", now()
        job.stop_reason = f"its tuning process died; the study runs trial {number}'s values again"
        job.save()
    reason = job.stop_reason or f"its tuning process died after the job {job.status}"
    end_abandoned_run(job.mlflow_run_id, reason, RUN_STATUS.get(job.status, "KILLED"))


def stop_reason(trials: list[optuna.trial.FrozenTrial], record: StudyRecord) -> str | None:
    session, settings = record.session_settings, record.study_settings
    counts = count(trials)
    if spent(counts) >= session.trials:
        return f"{session.trials} trials"
    if session.deadline is not None and time.time() >= session.deadline:
        return f"the wall-clock limit of {session.timeout_s:g} s"
    best = best_trial(trials, settings.maximize)
    if reached_target(best, session.target, settings.maximize):
        return f"the target {settings.objective} {session.target:g} (trial {best.number}: {best.value:.4g})"
    return None


def _update_record(record: StudyRecord, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Refresh the counts and the best in ``study.json``, so ``kennel jobs studies`` is current during a run."""
    fresh = load_study_record(record.path)
    fresh.counts = count(trials)
    fresh.best = best_summary(best_trial(trials, fresh.study_settings.maximize))
    fresh.save()


def describe(result: TrialResult, objective: str, best: optuna.trial.FrozenTrial | None, columns: int = WIDTH) -> str:
    """A trial's line; one longer than ``columns`` folds between its fields, each ``name=value`` whole."""
    value = "-" if result.value is None else f"{result.value:.4f}"
    params = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.params.items()]
    head = f"trial {result.number:>3} {result.state:<8} {objective}={value}  {result.seconds:5.1f}s"
    note = f"({result.note.splitlines()[0][:160]})" if result.state != "complete" and result.note else ""
    ranked = f"[best {best.value:.4f}: trial {best.number}]" if best is not None else ""
    line = "  ".join(part for part in (head, " ".join(params), note, ranked) if part)
    if len(line) <= columns:
        return line
    return fold([piece for piece in (*head.split(), *params, *note.split(), ranked) if piece], columns)


def work(folder: Path, worker: int = 0, stream: TextIO | None = sys.stdout) -> str:
    """Run trials until the study's session says stop; returns why it stopped."""
    record = load_study_record(folder)
    settings = record.study_settings
    study = build_study(record, worker)
    claim = claim_lock(record)
    while True:
        trial = None
        try:
            # Claiming is atomic across workers: count, then ask, under one lock, so the study ends with exactly
            # the requested number of trials however many workers race for the last one.
            with claim:
                recover(study)
                trials = study.get_trials(deepcopy=False)
                reason = stop_reason(trials, record)
                if reason is not None:
                    return reason
                trial = study.ask()
                for key, value in ((HOST, this_host()), (PID, os.getpid()), (WORKER, worker)):
                    trial.set_user_attr(key, value)
            result = run_trial(study, trial, record, settings)
        except KeyboardInterrupt:
            if trial is not None:
                interrupt(study, trial._trial_id)
            raise
        with claim:
            trials = study.get_trials(deepcopy=False)
            _update_record(record, trials)
        if stream is not None:
            best = best_trial(trials, settings.maximize)
            print(describe(result, settings.objective, best, width(stream)), file=stream, flush=True)


def _watch_parent() -> None:
    """Stop like Ctrl-C when the runner that started this worker dies (even by SIGKILL), so no worker is left
    training trials nobody waits for."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True, name="kennel-parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a kennel tuning worker (started by kennel tune --parallel)")
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    _watch_parent()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a polite stop ends like Ctrl-C
    record = load_study_record(args.study_dir)
    threads = SessionSettings.model_validate(record.session).threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        work(args.study_dir, args.index)
    except KeyboardInterrupt:
        return 130
    except ObjectiveError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0

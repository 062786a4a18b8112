"""Running a training job from start to finish: the loop with its observers, evaluation, artifact, record.

``train(config)`` starts a new job; ``resume(job)`` continues a killed one from its last checkpoint. What a job
is made of is built in :mod:`kennel.job.build`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

import torch

from kennel import distributed
from kennel.allocator import keep_buffers_in_heap
from kennel.config import ConfigError, TrainConfig, load_config
from kennel.distributed import Ranks
from kennel.engine import LoopConfig, Observer, Trainer
from kennel.errors import Failure, KennelError
from kennel.home import jobs_dir
from kennel.inference import machine
from kennel.job.build import (
    build_model,
    create_record,
    features_identity,
    fetch_job_weights,
    load_data,
    loop_observers,
    profiler_session,
    resolve_device,
    seed_everything,
    tracker,
)
from kennel.job.outputs import choose_head, save_results, write_failure
from kennel.jobs import JobRecord, load_job, now
from kennel.observers.checkpoint import best_weights, resume_checkpoint
from kennel.observers.report import ReportWriter
from kennel.optim import build_optimizer, build_schedule, param_groups

log = logging.getLogger(__name__)

REPORT_NICENESS = 10  # the background report's: it yields the cores to whatever the user runs next
_REPORTING: list[subprocess.Popen] = []


def train(
    config: TrainConfig,
    observers: Sequence[Observer] = (),
    study: str | None = None,
    stream: TextIO | Literal["stdout"] | None = "stdout",
    progress: bool | None = None,
    heatmaps: Literal["now", "later"] = "now",
) -> JobRecord:
    """Run a new training job; returns its record (status, metrics, artifact path). Metric lines go to
    ``stream``: the ``sys.stdout`` of the moment the job runs by default, none for ``None``. ``heatmaps``: the
    report gallery's heatmaps made before this returns, on the model in memory, or ``later``, once the record is
    final, by ``kennel report JOB`` in a process of its own at low priority (what ``kennel train`` does: the job
    does not wait for them; its page shows the gallery without them until that process writes it again).

    Under torchrun every process calls this with the same config: rank 0 creates the job and tells the others
    its id (see :mod:`kennel.distributed`)."""
    fetch_job_weights(config)  # before the job exists: weights it cannot get leave no failed job behind
    layout = load_data(config)
    ranks = _start_ranks(config)
    record = _shared_record(create_record(config, study, layout) if ranks.is_main else None, ranks)
    return _run(record, config, layout, observers, stream, progress, resume=False, ranks=ranks, heatmaps=heatmaps)


def resume(
    ref: str | Path,
    observers: Sequence[Observer] = (),
    stream: TextIO | Literal["stdout"] | None = "stdout",
    progress: bool | None = None,
    heatmaps: Literal["now", "later"] = "now",
) -> JobRecord:
    """Continue job ``ref`` from its last checkpoint (a finished job is returned as it is); ``heatmaps`` as
    :func:`train` takes them."""
    record = load_job(ref)
    if record.status == "completed":
        return record
    config = load_config(record.folder.config_file)
    fetch_job_weights(config)
    layout = load_data(config)
    ranks = _start_ranks(config)
    return _run(record, config, layout, observers, stream, progress, resume=True, ranks=ranks, heatmaps=heatmaps)


def _start_ranks(config: TrainConfig) -> Ranks:
    """Join torchrun's process group, if torchrun started this process; one process is rank 0 of 1."""
    ranks = distributed.from_environment()
    try:
        distributed.per_rank_batch(config.data.batch_size, ranks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return distributed.start(resolve_device(config.device))


def _shared_record(record: JobRecord | None, ranks: Ranks) -> JobRecord:
    """Rank 0's job on every rank. The other ranks hold a stand-in they never save: only rank 0 writes."""
    job_id = distributed.broadcast_text(record.id if record is not None else "", ranks)
    if record is not None:
        return record
    return JobRecord(id=job_id, name=job_id, job_dir=str(jobs_dir() / job_id))


def _run(
    record: JobRecord,
    config: TrainConfig,
    layout,
    extra: Sequence[Observer],
    stream: TextIO | Literal["stdout"] | None,
    progress: bool | None,
    resume: bool,
    ranks: Ranks,
    heatmaps: Literal["now", "later"] = "now",
) -> JobRecord:
    from kennel.inputs import prepare_inputs

    # Looked up now, not at import: a caller (a test runner, a notebook) may have swapped sys.stdout since.
    stream = sys.stdout if stream == "stdout" else stream

    keep_buffers_in_heap()
    started = time.perf_counter()
    earlier_seconds = (record.duration_s or 0.0) if resume else 0.0
    gallery_waits = False  # a report gallery whose heatmaps a process of their own makes after the job (heatmaps later)
    device = distributed.process_device(resolve_device(config.device), ranks)
    # Each rank its own random stream (dropout, augmentation); the shuffle is seeded apart, the same on all.
    seed_everything(config.seed + ranks.rank)
    if device.type == "cuda":
        # Every step has the same input shape, so cuDNN's search for the fastest kernels pays after one step.
        torch.backends.cudnn.benchmark = True
    if ranks.is_main:
        record.status, record.started, record.error, record.stop_reason = "running", record.started or now(), None, None
        record.pid = os.getpid()
        record.params.pop("processes", None)  # a resumed job may run on another number of processes
        if ranks.distributed:
            record.params["processes"] = ranks.world_size
        record.save()
    # Tracking starts first, so a job that fails while loading weights or data still shows in MLflow.
    run = tracker(record, config, record.study or "kennel", ranks)
    profiler = profiler_session(record, config, device, ranks)
    # The job's own observers, in the order their on_job_end must run: the report first, then the profiler's
    # page, then the tracker, which copies both into MLflow and closes the run.
    job_observers = [o for o in (ReportWriter() if ranks.is_main else None, profiler, run) if o is not None]
    job_observers += [o for o in extra if ranks.is_main]
    _job_start(job_observers, record)
    trainer = None
    try:
        model, preprocessing = build_model(config, layout)
        inputs = prepare_inputs(model, layout, config, preprocessing, device, features_identity(config), ranks)
        trainable = inputs.module
        head = list(model.head_parameters())
        backbone = [] if inputs.cached else list(model.backbone_parameters())
        optimizer = build_optimizer(param_groups(head, backbone, config.optim), config.optim)
        schedule = build_schedule(optimizer, config.optim, len(inputs.train), config.epochs)
        observers = loop_observers(record, config, stream, progress, layout.class_names) if ranks.is_main else []
        if run is not None:
            observers.append(run)
        if profiler is not None:
            observers.append(profiler.observer(inputs.train))
        if ranks.is_main:
            observers += extra
        trainer = Trainer(
            trainable,
            optimizer,
            LoopConfig(
                epochs=config.epochs,
                device=device,
                amp=config.amp,
                channels_last=config.channels_last and not inputs.cached,
                log_every=config.log_every,
                compile=config.compile,
                ranks=ranks,
            ),
            observers,
            scheduler=schedule,
            loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=config.optim.label_smoothing),
        )
        saved = resume_checkpoint(record.folder.checkpoints) if resume else None
        if saved is not None:
            trainer.load_state_dict(saved)
            log.info("resuming %s after epoch %d", record.id, saved["epoch"])
        with machine.threads(inputs.threads):
            state = trainer.fit(inputs.train, inputs.valid)
        # Every rank's step records are on disk before rank 0's profiler reads them for its last check.
        distributed.barrier(ranks)
        if ranks.is_main:
            best = best_weights(record.folder.checkpoints)
            if best is not None:
                trainable.load_state_dict(best)
            record.metrics.update(fit_metrics(state.history))
            with machine.threads(inputs.threads):
                if inputs.split_features is not None and config.head != "sgd":
                    choose_head(record, config.head, inputs, len(layout.classes))
                if inputs.precision_accuracy is not None:
                    record.metrics.update(inputs.precision_accuracy())
            if inputs.feature_seconds:
                record.metrics["feature_seconds"] = round(inputs.feature_seconds, 2)
            trained = model.cpu() if device.type != "cuda" else model
            gallery_waits = save_results(
                record, config, trained, layout, preprocessing, inputs, heatmaps=heatmaps == "now"
            )
        # The outcome is saved with `ended`, in the job's last write: a job killed before it still reads "running",
        # never "completed" without an end.
        record.status, record.stop_reason = state.status, state.stop_reason
    except BaseException as error:
        record.status = "stopped" if isinstance(error, KeyboardInterrupt) else "failed"
        record.error = f"{type(error).__name__}: {error}"
        if trainer is not None:  # the console still shows what the finished epochs reached
            record.metrics.update(fit_metrics(trainer.history))
        if ranks.distributed:
            _share_failure(record, ranks, error)
        _end(record, job_observers, ranks, earlier_seconds + time.perf_counter() - started)
        written = write_failure(error)
        if written is not None and not isinstance(error, KennelError):
            raise JobFailed(f"job {record.id} failed: {_said(written)}") from error
        raise
    problem = _end(record, job_observers, ranks, earlier_seconds + time.perf_counter() - started)
    if problem is not None:
        raise JobFailed(f"job {record.id} failed as it ended: {problem}")
    if gallery_waits and ranks.is_main:
        _report_later(record)
    return record


def _report_later(record: JobRecord) -> None:
    """``kennel report JOB`` in a process of its own at low priority, for a job with a page to finish: it makes the
    gallery's heatmaps from the artifact, keeps them and writes the page again. The job has ended; what that process
    cannot do, ``kennel report JOB`` says when run by hand."""
    if record.status not in ("completed", "stopped", "pruned") or record.error or not record.artifact:
        return
    try:
        pid = _start_in_background([sys.executable, "-m", "kennel", "report", str(record.path)])
    except OSError as exc:
        log.warning("the report of %s waits for kennel report %s: %s", record.id, record.id, _said(exc))
        return
    log.info("the report's heatmaps of %s are made in the background (process %d)", record.id, pid)


def _start_in_background(command: list[str]) -> int:
    """Start ``command`` in a session of its own (a Ctrl-C in the job's terminal is not for it) at
    :data:`REPORT_NICENESS`, with nothing to read or write; its process id."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with contextlib.suppress(OSError, AttributeError):  # where niceness is not there, it runs at the job's
        os.setpriority(os.PRIO_PROCESS, process.pid, REPORT_NICENESS)
    _REPORTING.append(process)  # kept, not waited for: nothing waits for it
    return process.pid


class JobFailed(Failure):
    """A job that could not keep its results: a write of its model, record or tracking run failed (a full disk,
    a store gone). Its record says ``failed`` with the same cause, where the disk still took that write."""


def _end(record: JobRecord, observers: Sequence[Observer], ranks: Ranks, seconds: float) -> str | None:
    """The job's last write, then every job-level observer's ``on_job_end``. Returns what failed, or None; a
    failure turns a finished job into a failed one. An observer whose work is optional (the report pages, which
    ``kennel report`` writes again) catches its own errors; one that raises means the job lost a result."""
    problems = []
    if ranks.is_main:
        record.ended, record.duration_s = now(), round(seconds, 2)
        try:
            record.save()
        except OSError as exc:
            problems.append(f"cannot write {record.folder.record_file}: {_said(exc)}")
    for observer in observers:
        try:
            observer.on_job_end(record)
        except Exception as exc:
            log.warning("%s.on_job_end failed for %s: %s", type(observer).__name__, record.id, exc)
            problems.append(_said(exc))
    distributed.stop()
    if not problems:
        return None
    if record.status != "failed":
        record.status, record.error = "failed", "; ".join(problems)
        with contextlib.suppress(OSError):  # the disk is still full: the exit code and the message say why
            record.save()
    return "; ".join(problems)


def _said(error: BaseException) -> str:
    """An error in a person's words: ``No space left on device`` rather than ``[Errno 28] ...``."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def _share_failure(record: JobRecord, ranks: Ranks, error: BaseException) -> None:
    """When a rank fails, the others end too, rank 0 included (torchrun stops them, or their next collective
    finds the failed rank gone), often before it can say why: the failing rank writes the job's record itself
    before it leaves the process group, and rank 0 keeps that cause rather than its own consequence."""
    if not record.folder.has_record():  # another machine, without the job's folder: rank 0's machine has it
        return
    if ranks.is_main:
        on_disk = load_job(record.path)
        if on_disk.status == "failed" and (on_disk.error or "").startswith("rank "):
            record.status, record.error = on_disk.status, on_disk.error
        return
    if not isinstance(error, KeyboardInterrupt):
        shared = load_job(record.path)
        shared.status, shared.error, shared.ended = "failed", f"rank {ranks.rank}: {record.error}", now()
        shared.save()


def fit_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    last = history[-1]
    metrics = {k: last[k] for k in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy") if k in last}
    if any("valid_accuracy" in h for h in history):
        best = max(history, key=lambda h: h.get("valid_accuracy", -1.0))
        metrics["best_valid_accuracy"] = best["valid_accuracy"]
        metrics["best_epoch"] = best["epoch"]
    metrics["epochs_run"] = last["epoch"]
    return metrics


def _job_start(observers: Sequence[Observer], record: JobRecord) -> None:
    """Tell every job-level observer the job starts; one that fails is logged and keeps no other from its turn."""
    for observer in observers:
        try:
            observer.on_job_start(record)
        except Exception as exc:
            log.warning("%s.on_job_start failed for %s: %s", type(observer).__name__, record.id, exc)

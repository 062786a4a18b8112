"""A training job from start to finish: data, model, the loop with its observers, evaluation, artifact, record.

``train(config)`` starts a new job; ``resume(job)`` continues a killed one from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import torch

from kennel import distributed
from kennel.allocator import keep_buffers_in_heap
from kennel.config import ConfigError, TrainConfig, config_to_yaml, load_config
from kennel.data.layout import LayoutError, load_layout
from kennel.distributed import Ranks
from kennel.engine import LoopConfig, Observer, Trainer
from kennel.home import jobs_dir
from kennel.jobs import JobRecord, create_job, load_job, now
from kennel.models import create_model, get_backbone
from kennel.models.weights import available_offline
from kennel.observers.checkpoint import Checkpointer, load_checkpoint, resume_checkpoint
from kennel.observers.early_stopping import EarlyStopping
from kennel.observers.metrics_log import MetricsLogger
from kennel.observers.progress import ProgressBar
from kennel.observers.report import ReportWriter
from kennel.optim import build_optimizer, build_schedule, param_groups

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def key_params(config: TrainConfig) -> dict[str, object]:
    """The hyperparameters a person scans for in the console."""
    return {
        "lr": config.optim.lr,
        "batch_size": config.data.batch_size,
        "epochs": config.epochs,
        "optimizer": config.optim.name,
        "freeze": config.model.freeze,
        "augment": config.data.augment,
        "label_smoothing": config.optim.label_smoothing,
    }


def weights_identity(config: TrainConfig) -> str:
    """What the backbone's weights are, for the feature cache key."""
    if config.model.weights is not None:
        path = Path(config.model.weights)
        return f"file:{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if not config.model.pretrained:
        return f"random:seed{config.seed}"
    source = available_offline(get_backbone(config.model.backbone))
    return f"{source.kind}:{source.where}" if source else "download"


def _load_data(config: TrainConfig):
    data = config.data
    try:
        if data.train or data.valid or data.test:  # splits given one by one (SageMaker channels)
            return load_layout(data.root, dirs={s: data.split_dir(s) for s in ("train", "valid", "test")})
        if data.root is None:
            raise ConfigError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
        return load_layout(data.root)
    except (LayoutError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _observers(record: JobRecord, config: TrainConfig, stream: TextIO | None, progress: bool | None) -> list[Observer]:
    observers: list[Observer] = [
        MetricsLogger(record.path / "metrics.jsonl", every=config.log_every, stream=stream),
        Checkpointer(record.path / "checkpoints"),
        ProgressBar(progress),
    ]
    if config.early_stopping:
        observers.append(EarlyStopping(config.early_stopping))
    if config.debug.enabled:
        from kennel.debugger.hooks import Debugger

        observers.append(Debugger(record.path / "debug", config.debug))
    return observers


def _tracker(record: JobRecord, config: TrainConfig, experiment: str, ranks: Ranks):
    if not config.tracking or not ranks.is_main:
        return None
    from kennel.observers.tracking import MLflowTracker

    return MLflowTracker(record, config.model_dump(mode="json"), experiment=experiment)


def _profiler(record: JobRecord, config: TrainConfig, device: torch.device, ranks: Ranks):
    """The job's profiler session (system sampling starts now, so initialization is measured), or None. Other
    ranks than 0 only record their steps, for the LoadBalancing rule."""
    if not config.profiler.enabled:
        return None
    from kennel.profiler import ProfilerSession
    from kennel.profiler.session import RankSteps

    try:
        if not ranks.is_main:
            return RankSteps(record.path, ranks.rank)
        return ProfilerSession(record.path, config.profiler, device, world_size=ranks.world_size)
    except Exception:  # profiling must never keep a job from training
        log.warning("the profiler could not start for %s; the job runs without it", record.id, exc_info=True)
        return None


def train(
    config: TrainConfig,
    observers: Sequence[Observer] = (),
    study: str | None = None,
    stream: TextIO | Literal["stdout"] | None = "stdout",
    progress: bool | None = None,
) -> JobRecord:
    """Run a new training job; returns its record (status, metrics, artifact path). Metric lines go to
    ``stream``: the ``sys.stdout`` of the moment the job runs by default, none for ``None``.

    Under torchrun every process calls this with the same config: rank 0 creates the job and tells the others
    its id (see :mod:`kennel.distributed`)."""
    layout = _load_data(config)
    ranks = _start_ranks(config)
    record = None
    if ranks.is_main:
        record = create_job(
            config.name or f"{config.model.backbone}",
            backbone=config.model.backbone,
            params=key_params(config),
            config=config.model_dump(mode="json"),
            study=study,
        )
        (record.path / "config.yaml").write_text(config_to_yaml(config))
    record = _shared_record(record, ranks)
    return _run(record, config, layout, observers, stream, progress, resume=False, ranks=ranks)


def resume(
    ref: str | Path,
    observers: Sequence[Observer] = (),
    stream: TextIO | Literal["stdout"] | None = "stdout",
    progress: bool | None = None,
) -> JobRecord:
    """Continue job ``ref`` from its last checkpoint (a finished job is returned as it is)."""
    record = load_job(ref)
    if record.status == "completed":
        return record
    config = load_config(record.path / "config.yaml")
    layout = _load_data(config)
    return _run(record, config, layout, observers, stream, progress, resume=True, ranks=_start_ranks(config))


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
) -> JobRecord:
    from kennel.inputs import prepare_inputs

    # Looked up now, not at import: a caller (a test runner, a notebook) may have swapped sys.stdout since.
    stream = sys.stdout if stream == "stdout" else stream

    keep_buffers_in_heap()
    started = time.perf_counter()
    earlier_seconds = (record.duration_s or 0.0) if resume else 0.0
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
    tracker = _tracker(record, config, record.study or "kennel", ranks)
    profiler = _profiler(record, config, device, ranks)
    # The job's own observers, in the order their on_job_end must run: the report first, then the profiler's
    # page, then the tracker, which copies both into MLflow and closes the run.
    job_observers = [o for o in (ReportWriter() if ranks.is_main else None, profiler, tracker) if o is not None]
    job_observers += [o for o in extra if ranks.is_main]
    _job_event(job_observers, "on_job_start", record)
    trainer = None
    try:
        model, preprocessing = _build_model(config, layout)
        inputs = prepare_inputs(model, layout, config, preprocessing, device, weights_identity(config), ranks)
        trainable = inputs.module
        head = list(model.head_parameters())
        backbone = [] if inputs.cached else list(model.backbone_parameters())
        optimizer = build_optimizer(param_groups(head, backbone, config.optim), config.optim)
        schedule = build_schedule(optimizer, config.optim, len(inputs.train), config.epochs)
        observers = _observers(record, config, stream, progress) if ranks.is_main else []
        if tracker is not None:
            observers.append(tracker)
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
        checkpoints = record.path / "checkpoints"
        saved = resume_checkpoint(checkpoints) if resume else None
        if saved is not None:
            trainer.load_state_dict(saved)
            log.info("resuming %s at epoch %d", record.id, trainer._start_epoch + 1)
        state = trainer.fit(inputs.train, inputs.valid)
        # Every rank's step records are on disk before rank 0's profiler reads them for its last check.
        distributed.barrier(ranks)
        outcome = state.status, state.stop_reason
        if not ranks.is_main:
            record.status, record.stop_reason = outcome
            return record
        if (checkpoints / "best.pt").is_file():
            trainable.load_state_dict(load_checkpoint(checkpoints / "best.pt")["model"])
        record.metrics.update(_fit_metrics(state.history))
        if inputs.precision_accuracy is not None:
            record.metrics.update(inputs.precision_accuracy())
        if inputs.feature_seconds:
            record.metrics["feature_seconds"] = round(inputs.feature_seconds, 2)
        _finish(record, config, model.cpu() if device.type != "cuda" else model, layout, preprocessing, inputs)
        # The outcome is saved with `ended`, in the one write below: a job killed before it still reads "running",
        # never "completed" without an end.
        record.status, record.stop_reason = outcome
    except BaseException as error:
        record.status = "stopped" if isinstance(error, KeyboardInterrupt) else "failed"
        record.error = f"{type(error).__name__}: {error}"
        if trainer is not None:  # the console still shows what the finished epochs reached
            record.metrics.update(_fit_metrics(trainer.history))
        if ranks.distributed:
            _share_failure(record, ranks, error)
        raise
    finally:
        if ranks.is_main:
            record.ended = now()
            record.duration_s = round(earlier_seconds + time.perf_counter() - started, 2)
            record.save()
        _job_event(job_observers, "on_job_end", record)
        distributed.stop()
    return record


def _share_failure(record: JobRecord, ranks: Ranks, error: BaseException) -> None:
    """When a rank fails, the others end too, rank 0 included (torchrun stops them, or their next collective
    finds the failed rank gone), often before it can say why: the failing rank writes the job's record itself
    before it leaves the process group, and rank 0 keeps that cause rather than its own consequence."""
    saved = record.path / "job.json"
    if not saved.is_file():  # another machine, without the job's folder: rank 0's machine has it
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


def _build_model(config: TrainConfig, layout):
    spec = get_backbone(config.model.backbone)
    preprocessing = spec.preprocessing
    if config.data.image_size:
        preprocessing = preprocessing.scaled(config.data.image_size)
    model = create_model(
        spec.name,
        num_classes=len(layout.classes),
        pretrained=config.model.pretrained,
        weights=config.model.weights,
        dropout=config.model.dropout,
        freeze=config.model.freeze,
    )
    return model, preprocessing


def warm_feature_cache(config: TrainConfig) -> bool:
    """Compute the frozen backbone's cached features for ``config`` without training (a tuner does this once
    with every core before its workers start). Returns whether ``config`` trains on cached features."""
    from kennel.inputs import prepare_inputs

    layout = _load_data(config)
    model, preprocessing = _build_model(config, layout)
    device = resolve_device(config.device)
    return prepare_inputs(model, layout, config, preprocessing, device, weights_identity(config)).cached


def _fit_metrics(history: list[dict[str, float]]) -> dict[str, float]:
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


def _finish(record: JobRecord, config: TrainConfig, model, layout, preprocessing, inputs) -> None:
    """Evaluate the best weights on the test split and export the artifact."""
    from kennel.artifact import OnnxExportError, save_artifact
    from kennel.evaluation import summarize

    if config.evaluate_test:
        logits, targets = inputs.test_logits()
        files = [str(p) for p, _ in layout["test"].files]
        result = summarize(logits, targets, layout.class_names, files)
        result.save(record.path / "evaluation")
        record.metrics["test_accuracy"] = result.top1
        record.metrics["test_top5"] = result.top5
    record.engine = dict(inputs.engine)
    check = inputs.engine.get("extraction", {}).get("int8_check") or {}
    if inputs.int8_calibration is not None and check.get("ok"):
        record.metrics["int8_ok"] = 1.0  # int8 passed its check on valid: the endpoint's auto may run int8 too

    def save(export_onnx: bool) -> Path:
        return save_artifact(
            model.eval(),
            layout.class_names,
            preprocessing,
            record.path / "model",
            metrics=dict(record.metrics),
            class_folders=list(layout.classes),
            export_onnx=export_onnx,
            int8_calibration=inputs.int8_calibration if export_onnx else None,
        )

    try:
        artifact = save(config.export_onnx)
    except OnnxExportError as exc:
        if _write_failure(exc) is not None:  # a full disk is no export problem: the job fails, saying why
            raise _write_failure(exc) from exc
        # Never lose a trained model to an export problem: keep the PyTorch weights, say why ONNX is missing.
        log.warning("ONNX export failed for %s (%s); the artifact has PyTorch weights only", record.id, exc)
        record.metrics["onnx_export_failed"] = 1.0
        artifact = save(False)
    record.artifact = str(artifact)
    record.save()


def _write_failure(error: BaseException) -> OSError | None:
    """The OSError (no space left, a read-only folder) behind ``error``, if a failed write caused it."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _job_event(observers: Sequence[Observer], event: str, record: JobRecord) -> None:
    """Tell every job-level observer; one that fails is logged and keeps no other from its turn (the tracker
    must close its run whatever the report did)."""
    for observer in observers:
        try:
            getattr(observer, event)(record)
        except Exception as exc:
            log.warning("%s.%s failed for %s: %s", type(observer).__name__, event, record.id, exc)

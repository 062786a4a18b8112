"""Building a training job: its record, data, model and observers, from a checked :class:`TrainConfig`.
:mod:`kennel.job.run` runs what is built here."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from kennel.config import ConfigError, TrainConfig, config_to_yaml
from kennel.data.fingerprint import dataset_fingerprint
from kennel.data.layout import DatasetLayout, LayoutError, load_layout
from kennel.distributed import Ranks
from kennel.engine import Observer
from kennel.errors import UsageError
from kennel.jobs import JobRecord, create_job
from kennel.models import create_model, get_backbone
from kennel.models.weights import available_offline, fetch_weights
from kennel.observers.checkpoint import Checkpointer
from kennel.observers.early_stopping import EarlyStopping
from kennel.observers.metrics_log import MetricsLogger
from kennel.observers.progress import ProgressBar

log = logging.getLogger(__name__)


def create_record(config: TrainConfig, study: str | None, layout: DatasetLayout | None = None) -> JobRecord:
    """A new job's folder, its record and the resolved config it runs (what --resume reads again); with the
    ``layout`` it trains on, that data's fingerprint."""
    record = create_job(
        config.name or f"{config.model.backbone}",
        backbone=config.model.backbone,
        params=key_params(config),
        config=config.model_dump(mode="json"),
        study=study,
        data_fingerprint=dataset_fingerprint(layout) if layout is not None else None,
    )
    record.folder.write_config(config_to_yaml(config))
    return record


def fetch_job_weights(config: TrainConfig) -> None:
    """Have the pretrained weights ``config`` needs on this machine before a job is made of it: a ``--weights``
    file that is there, or the backbone's weights found offline or downloaded now. Weights it cannot get fail
    here in a line (exit 2), not as a failed job with a traceback after its data has loaded."""
    if config.model.weights is not None:
        if not Path(config.model.weights).expanduser().is_file():  # as a --config or --data that is not there
            raise UsageError(f"weights file {config.model.weights} does not exist (--weights)")
    elif config.model.pretrained:
        fetch_weights(get_backbone(config.model.backbone))


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


def features_identity(config: TrainConfig) -> str:
    """The weights and what else changes the features a frozen backbone gives: the test-time augmentation."""
    return weights_identity(config) + ("" if config.tta == "none" else f"+tta={config.tta}")


def load_data(config: TrainConfig):
    data = config.data
    try:
        if data.train or data.valid or data.test:  # splits given one by one (SageMaker channels)
            return load_layout(data.root, dirs={s: data.split_dir(s) for s in ("train", "valid", "test")})
        if data.root is None:
            raise ConfigError("no dataset: pass --data DIR (a folder with train/ valid/ test/)")
        return load_layout(data.root)
    except (LayoutError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def loop_observers(
    record: JobRecord, config: TrainConfig, stream: TextIO | None, progress: bool | None, classes: list[str]
) -> list[Observer]:
    """The loop's observers of rank 0's job: metrics, checkpoints, progress, early stopping, the debugger (which
    names the ``classes`` in its findings)."""
    folder = record.folder
    observers: list[Observer] = [
        MetricsLogger(folder, every=config.log_every, stream=stream),
        Checkpointer(folder.checkpoints),
        ProgressBar(progress),
    ]
    if config.early_stopping:
        observers.append(EarlyStopping(config.early_stopping))
    if config.debug.enabled:
        from kennel.debugger.hooks import Debugger

        observers.append(Debugger(folder.debug, config.debug, classes=classes))
    return observers


def tracker(record: JobRecord, config: TrainConfig, experiment: str, ranks: Ranks):
    """The job's MLflow run (rank 0 only), or None when tracking is off."""
    if not config.tracking or not ranks.is_main:
        return None
    from kennel.observers.tracking import MLflowTracker

    return MLflowTracker(record, config.model_dump(mode="json"), experiment=experiment)


def profiler_session(record: JobRecord, config: TrainConfig, device: torch.device, ranks: Ranks):
    """The job's profiler session (system sampling starts now, so initialization is measured), or None. Other
    ranks than 0 only record their steps, for the LoadBalancing rule."""
    if not config.profiler.enabled:
        return None
    from kennel.profiler.session import ProfilerSession, RankSteps

    try:
        if not ranks.is_main:
            return RankSteps(record.path, ranks.rank)
        return ProfilerSession(record.path, config.profiler, device, world_size=ranks.world_size)
    except Exception:  # profiling must never keep a job from training
        log.warning("the profiler could not start for %s; the job runs without it", record.id, exc_info=True)
        return None


def build_model(config: TrainConfig, layout):
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
    ).use_tta(config.tta)
    return model, preprocessing


def warm_feature_cache(config: TrainConfig) -> bool:
    """Compute the frozen backbone's cached features for ``config`` without training (a tuner does this once
    with every core before its workers start). Returns whether ``config`` trains on cached features."""
    from kennel.inputs import prepare_inputs

    fetch_job_weights(config)
    layout = load_data(config)
    model, preprocessing = build_model(config, layout)
    device = resolve_device(config.device)
    return prepare_inputs(model, layout, config, preprocessing, device, features_identity(config)).cached

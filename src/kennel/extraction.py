"""The job's frozen backbone on the inference engine: which backend and precision compute its features, the
int8 calibration on the job's own training photos, and the check that int8 keeps the accuracy.

``auto`` takes int8 only where it measured faster here and a probe head loses at most :data:`INT8_MAX_LOSS` of
valid top-1 with int8 features instead of fp32 ones (:func:`int8_verdict`); otherwise it says why not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kennel.atomic import atomic_write_json
from kennel.data.images import open_rgb
from kennel.data.layout import Split
from kennel.home import cache_dir
from kennel.inference import Engine, features_graph, open_engine
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CALIBRATION_PHOTOS = 64  # spread over the training split's classes; MinMax ranges settle well before this
# Small batches: ONNX Runtime's calibrator runs the model with every node's output kept, so its memory grows with
# the batch (lite0 + lite2 at 260 px: 6.7 GB at 16 photos a batch, 2.4 GB at 4); the ranges, min and max over all 64
# photos, are the same.
CALIBRATION_BATCH = 4
INT8_MAX_LOSS = 0.005  # valid top-1, as a fraction: at most 0.5 points


def calibration_files(split: Split, count: int = CALIBRATION_PHOTOS) -> list:
    """Evenly spaced photos of the (class-sorted) split, so every class contributes."""
    step = max(1, len(split.files) // count)
    return [path for path, _ in split.files[::step][:count]]


def calibration_batches(split: Split, preprocessing: Preprocessing) -> Iterator[np.ndarray]:
    transform = preprocessing.eval_transform()
    files = calibration_files(split)
    for start in range(0, len(files), CALIBRATION_BATCH):
        chunk = files[start : start + CALIBRATION_BATCH]
        yield torch.stack([transform(open_rgb(p, preprocessing.resize_size)) for p in chunk]).numpy()


@dataclass
class Plan:
    """The engine the job's features come from, and where it is int8, the engines its check needs."""

    engine: Engine
    fp32: Engine | None = None  # for the int8 check: valid features at fp32
    fallback: Engine | None = None  # the fastest other than int8, for where int8 loses accuracy

    def check_key(self, valid_fingerprint: str) -> str:
        """What the int8 check's verdict depends on: the backbone and weights, the calibration, the valid photos."""
        graph = self.engine.graph
        payload = f"{graph.identity}:{graph.calibration_id}:{valid_fingerprint}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def key_precision(engine: Engine) -> str:
    """What the feature cache keys features by: fp32, bf16, or int8 with its calibration."""
    return f"int8:{engine.graph.calibration_id}" if engine.precision == "int8" else engine.precision


def plan(
    features: torch.nn.Module,
    backbone: str,
    weights_id: str,
    preprocessing: Preprocessing,
    train: Split,
    train_fingerprint: str,
    device: torch.device,
    backend: str = "auto",
    precision: str = "auto",
) -> Plan:
    """Choose how this job's features are computed (measured on first use on this machine)."""
    calibration_id = hashlib.sha256(f"{train_fingerprint}:{CALIBRATION_PHOTOS}".encode()).hexdigest()[:12]
    graph = features_graph(
        features,
        backbone,
        weights_id,
        preprocessing.input_size,
        calibration=lambda: calibration_batches(train, preprocessing),
        calibration_id=calibration_id,
    )
    engine = open_engine(graph, device, backend, precision)
    if engine.precision != "int8":
        return Plan(engine)
    # The valid split at fp32 too: for the check, and to record both accuracies.
    reference = "auto" if backend == "onnxruntime-int8" else backend
    fp32 = open_engine(graph, device, reference, "fp32")
    fallback = (
        open_engine(graph, device, reference, precision, exclude=(engine.backend.name,))
        if precision == "auto"
        else None
    )
    return Plan(engine, fp32, fallback)


def probe_accuracy(fit: torch.Tensor, labels: torch.Tensor, *scored: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """Top-1 of a multinomial logistic regression (L-BFGS, standardised features) fitted on ``fit``, on each
    ``(features, labels)`` in ``scored``: a quick, deterministic stand-in for a trained head."""
    mean, std = fit.mean(0), fit.std(0).clamp_min(1e-6)
    x = (fit - mean) / std
    linear = torch.nn.Linear(x.shape[1], int(labels.max()) + 1)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=100, history_size=10)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), labels) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return [float((linear((f - mean) / std).argmax(1) == y).float().mean()) for f, y in scored]


def _alternate_within_class(labels: torch.Tensor) -> torch.Tensor:
    """0, 1, 0, 1, ... along each class's rows: two folds that each hold half of every class."""
    rank = torch.zeros_like(labels)
    for label in labels.unique():
        rows = (labels == label).nonzero().squeeze(1)
        rank[rows] = torch.arange(len(rows)) % 2
    return rank


def int8_verdict(valid_fp32, valid_int8, key: str) -> dict[str, Any]:
    """Whether int8 features keep the accuracy, before the training split is computed at all: in two folds of
    the valid split, a probe fitted on one fold's fp32 features scores the other fold's fp32 and int8 features.
    Kept in the cache by ``key``, so a warm job does not fit it again."""
    path = cache_dir() / "features" / f"int8-check-{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    fp32, int8, labels = valid_fp32.features, valid_int8.features, valid_fp32.labels
    folds = [_alternate_within_class(labels) == k for k in (0, 1)]
    right = {"fp32": 0.0, "int8": 0.0}
    for fit, score in (folds, folds[::-1]):
        a, b = probe_accuracy(fp32[fit], labels[fit], (fp32[score], labels[score]), (int8[score], labels[score]))
        right["fp32"] += a * int(score.sum())
        right["int8"] += b * int(score.sum())
    fp32_top1, int8_top1 = right["fp32"] / len(labels), right["int8"] / len(labels)
    verdict = {
        "valid_top1_fp32": round(fp32_top1, 4),
        "valid_top1_int8": round(int8_top1, 4),
        "loss_points": round(100 * (fp32_top1 - int8_top1), 2),
        "ok": fp32_top1 - int8_top1 <= INT8_MAX_LOSS,
        "how": "2-fold logistic-regression probe on the valid split",
    }
    atomic_write_json(path, verdict)
    return verdict

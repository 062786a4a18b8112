"""The job's frozen backbone on the inference engine: which backend and precision compute its features, the
int8 calibration on the job's own training photos, and the check that int8 keeps the accuracy.

``auto`` takes int8 only where it measured faster here, saves the job more time than it costs it (:func:`int8_cost`),
and a probe head loses at most :data:`INT8_MAX_LOSS` of valid top-1 with int8 features instead of those of the
backend it would otherwise take (:func:`int8_verdict`); otherwise it says why not.
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
from kennel.inference import BACKENDS, Engine, features_graph, machine, open_engine
from kennel.inference.store import build_seconds
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
    # For the int8 check: the valid split's features to compare int8's with. Under auto that is the fallback's own
    # (so where int8 loses, its valid features are there already); where int8 was asked for, fp32.
    reference: Engine | None = None
    fallback: Engine | None = None  # the fastest other than int8, for where int8 loses accuracy

    def check_key(self, valid_fingerprint: str) -> str:
        """What the int8 check's verdict depends on: the backbone and weights, the calibration, the valid photos,
        and the precision int8 is compared with."""
        graph = self.engine.graph
        reference = self.reference.precision if self.reference is not None else "fp32"
        payload = f"{graph.identity}:{graph.calibration_id}:{valid_fingerprint}:{reference}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def fall_back(self, why: str) -> None:
        """The features come from the fallback instead of int8, its reason saying why int8 was passed over."""
        self.fallback.reason = f"{why}; of the others, {self.fallback.reason}"
        self.engine = self.fallback


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
    photos: int = 0,
    check_photos: int = 0,
) -> Plan:
    """Choose how this job's features are computed (measured on first use on this machine). ``photos``: how many
    the job computes features for (every split and view), ``check_photos`` how many more int8's check computes
    (the valid split's): where int8 is the fastest but not asked for, it is taken only if it pays for itself."""
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
    reference = "auto" if backend == "onnxruntime-int8" else backend
    if precision != "auto":  # int8 asked for: checked against fp32, and both accuracies recorded
        return Plan(engine, reference=open_engine(graph, device, reference, "fp32"))
    # By the figures int8 was chosen by: no backend is timed again within one choice.
    fallback = open_engine(graph, device, reference, precision, (engine.backend.name,), engine.measurement)
    if backend not in BACKENDS:  # chosen, not named
        cost = int8_cost(engine, fallback, photos, check_photos)
        if cost is not None:
            plan = Plan(engine, fallback=fallback)
            plan.fall_back(cost)
            return plan
    return Plan(engine, reference=fallback, fallback=fallback)


def int8_cost(int8: Engine, other: Engine, photos: int, check_photos: int) -> str | None:
    """Why int8 does not pay for this job, or None where it does (or nothing measured says otherwise): the time
    its faster forward pass saves over ``photos`` against what only int8 costs the job, its check's pass over the
    valid split at the other precision and two quantizations (its features' model, calibrated on the job's photos,
    and the artifact's), as long as the last int8 build of this backbone took here."""
    fast, slow = int8.speeds.get(int8.backend.name), int8.speeds.get(other.backend.name)
    if not photos or not fast or not slow:
        return None
    saved = photos * (1 / slow - 1 / fast)
    batches = -(-CALIBRATION_PHOTOS // CALIBRATION_BATCH)
    cost = check_photos / slow + 2 * (build_seconds(int8.graph, "int8", batches) or 0.0)
    if saved > cost:
        return None
    return f"int8 would save {saved:.0f} s on {photos} photos and cost {cost:.0f} s (its check and quantization)"


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


def int8_verdict(valid_reference, valid_int8, key: str, reference: str = "fp32") -> dict[str, Any]:
    """Whether int8 features keep the accuracy, before the training split is computed at all: in two folds of
    the valid split, a probe fitted on one fold's ``reference`` features (fp32, or the fallback's bf16) scores the
    other fold's reference and int8 features. Kept in the cache by ``key``, so a warm job does not fit it again."""
    path = cache_dir() / "features" / f"int8-check-{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    base, int8, labels = valid_reference.features, valid_int8.features, valid_reference.labels
    folds = [_alternate_within_class(labels) == k for k in (0, 1)]
    right = {"reference": 0.0, "int8": 0.0}
    for fit, score in (folds, folds[::-1]):
        with machine.threads(1):  # small tensor operations, as a head on cached features (TrainingInputs.threads)
            a, b = probe_accuracy(base[fit], labels[fit], (base[score], labels[score]), (int8[score], labels[score]))
        right["reference"] += a * int(score.sum())
        right["int8"] += b * int(score.sum())
    reference_top1, int8_top1 = right["reference"] / len(labels), right["int8"] / len(labels)
    verdict = {
        "reference": reference,
        f"valid_top1_{reference}": round(reference_top1, 4),
        "valid_top1_int8": round(int8_top1, 4),
        "loss_points": round(100 * (reference_top1 - int8_top1), 2),
        "ok": reference_top1 - int8_top1 <= INT8_MAX_LOSS,
        "how": "2-fold logistic-regression probe on the valid split",
    }
    atomic_write_json(path, verdict)
    return verdict

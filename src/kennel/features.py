"""The feature cache: when the backbone is frozen, its output for a photo never changes, so compute it once.

Features are keyed by the split's content, the backbone and its weights, the preprocessing, the augmentation and
the precision the engine ran at (:func:`feature_key` builds every key); a second job (or a tuning trial) with the
same key reads them from disk in milliseconds instead of running the backbone over every photo again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kennel.atomic import atomic_write
from kennel.data.dataset import ImageDataset
from kennel.data.layout import Split
from kennel.home import cache_dir
from kennel.inference import Engine
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)
FORMAT_VERSION = 3
EXTRACTION_BATCH = 32


@dataclass(frozen=True)
class FeatureKey:
    split: str
    fingerprint: str
    backbone: str
    weights: str
    preprocessing: dict
    augment: str
    views: int
    seed: int
    precision: str  # fp32, bf16, or int8 with its calibration

    def digest(self) -> str:
        payload = json.dumps({"v": FORMAT_VERSION, **self.__dict__}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def feature_key(
    name: str,
    fingerprint: str,
    backbone: str,
    weights: str,
    preprocessing: Preprocessing,
    precision: str,
    views: int = 1,
    augment: str = "none",
    seed: int = 0,
) -> FeatureKey:
    """The cache key of a split's features (``fingerprint``: :func:`~kennel.data.fingerprint.split_fingerprint`).
    The augmentation and the seed belong in it only where they change the features (augmented views): one view is
    the deterministic eval view, the same for every seed."""
    augmented = views > 1
    return FeatureKey(
        split=name,
        fingerprint=fingerprint,
        backbone=backbone,
        weights=weights,
        preprocessing=preprocessing.to_dict(),
        augment=augment if augmented else "none",
        views=views,
        seed=seed if augmented else 0,
        precision=precision,
    )


@dataclass
class Features:
    features: torch.Tensor  # [N * views, D] (a stage's input: [N * views, C, H, W]), float32 unless stored smaller
    labels: torch.Tensor  # [N * views]
    files: list[str]  # the N files, in order; row i * N + j is view i of file j

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"features": self.features.contiguous(), "labels": self.labels.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"files": json.dumps(self.files)}))

    @classmethod
    def load(cls, path: Path) -> Features:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            files = json.loads(handle.metadata()["files"])
            return cls(handle.get_tensor("features"), handle.get_tensor("labels"), files)


def cache_path(key: FeatureKey, root: Path | None = None) -> Path:
    return (root or cache_dir() / "features") / f"{key.backbone}-{key.split}-{key.digest()}.safetensors"


def cached_features(
    engine: Callable[[], Engine],
    split: Split,
    key: FeatureKey,
    preprocessing: Preprocessing,
    root: Path | None = None,
    stored: torch.dtype = torch.float32,
) -> tuple[Features, bool]:
    """The split's features (all views), from the cache when present, else computed by ``engine()`` (called only
    then, so a cache hit opens no backend) and kept as ``stored``; returns (features, was_cached)."""
    from filelock import FileLock

    path = cache_path(key, root)
    cached = _load_cached(path)
    if cached is not None:
        return cached, True
    # Parallel tuning trials may ask for the same features at once: one process computes them while the others
    # wait for its file, so no two processes repeat the backbone's forward pass over the same photos.
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        cached = _load_cached(path)
        if cached is not None:
            return cached, True
        result = _compute(engine(), split, key, preprocessing, stored)
        result.save(path)
    return result, False


def _load_cached(path: Path) -> Features | None:
    if not path.is_file():
        return None
    try:
        return Features.load(path)
    except Exception as exc:  # a damaged cache file is recomputed, never trusted
        log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
        return None


def _compute(
    engine: Engine, split: Split, key: FeatureKey, preprocessing: Preprocessing, stored: torch.dtype
) -> Features:
    draft = preprocessing.resize_size
    blocks, labels = [], []
    for view in range(key.views):
        # View 0 is the deterministic eval view; further views are random augmentations, seeded per view.
        transform = preprocessing.eval_transform() if view == 0 else preprocessing.train_transform(key.augment)
        dataset = ImageDataset(split, transform, draft_size=draft)
        label = f"{key.split} features" + (f" (view {view + 1}/{key.views})" if key.views > 1 else "")
        # Augmented views draw from torch's global generator: seeded per view on a fork of it (the job's own
        # stream, dropout included, stays where it was, so a cold and a warm job train alike), and decoded by one
        # thread, so the draws come in file order and the same views come out every time.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed + view)
            (features,) = engine.run_dataset(dataset, EXTRACTION_BATCH, description=label, threads=1 if view else None)
        blocks.append(features.to(stored))  # view by view: the whole split is never held at fp32
        labels.append(torch.tensor([lbl for _, lbl in split.files]))
    return Features(torch.cat(blocks), torch.cat(labels), [str(p) for p, _ in split.files])

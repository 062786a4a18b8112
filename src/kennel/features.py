"""The feature cache: when the backbone is frozen, its output for a photo never changes, so compute it once.

Features are keyed by the split's content, the backbone and its weights, the preprocessing, the augmentation
and the numeric precision; a second job (or a tuning trial) with the same key reads them from disk in
milliseconds instead of re-running the backbone over every photo.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kennel.allocator import keep_buffers_in_heap
from kennel.atomic import atomic_write
from kennel.data.dataset import ImageDataset, make_loader
from kennel.data.layout import Split
from kennel.home import cache_dir
from kennel.preprocessing import Preprocessing

log = logging.getLogger(__name__)
FORMAT_VERSION = 2


def cpu_has_native_bf16() -> bool:
    """bf16 matmuls are fast only where the CPU has AVX512-BF16 or AMX; elsewhere they are emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def extraction_dtype(device: torch.device, amp: bool) -> torch.dtype:
    if not amp:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def split_fingerprint(split: Split) -> str:
    """A hash of every file's relative path and bytes: renaming, editing or adding a photo changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for path, label in split.files:
        digest.update(f"{path.relative_to(split.root)}\0{label}\0".encode())
        digest.update(hashlib.blake2b(path.read_bytes(), digest_size=16).digest())
    return digest.hexdigest()


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
    dtype: str

    def digest(self) -> str:
        payload = json.dumps({"v": FORMAT_VERSION, **self.__dict__}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class Features:
    features: torch.Tensor  # [N * views, D], float32
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


@torch.no_grad()
def extract(
    features: nn.Module,
    dataset: ImageDataset,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int = 64,
    workers: int | None = None,
    description: str = "features",
    seed: int = 0,
) -> torch.Tensor:
    """Run the frozen ``features`` module over ``dataset`` (channels-last, reduced precision where it is fast)."""
    from rich.console import Console
    from rich.progress import Progress

    keep_buffers_in_heap()
    features = features.eval().to(device).to(memory_format=torch.channels_last)
    loader = make_loader(
        dataset, batch_size, shuffle=False, workers=workers, pin_memory=device.type == "cuda", seed=seed
    )
    chunks = []
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    console = Console(stderr=True)  # stdout stays for metric lines; no bar when stderr is not a terminal
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=len(dataset))
        for images, _ in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast:
                chunks.append(features(images).float().cpu())
            progress.advance(task, len(images))
    return torch.cat(chunks)


def cached_features(
    model_features: nn.Module,
    split: Split,
    key: FeatureKey,
    preprocessing: Preprocessing,
    device: torch.device,
    workers: int | None = None,
    root: Path | None = None,
) -> tuple[Features, bool]:
    """The split's features (all views), from the cache when present; returns (features, was_cached)."""
    from filelock import FileLock

    path = (root or cache_dir() / "features") / f"{key.backbone}-{key.split}-{key.digest()}.safetensors"
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
        result = _compute(model_features, split, key, preprocessing, device, workers)
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
    model_features: nn.Module,
    split: Split,
    key: FeatureKey,
    preprocessing: Preprocessing,
    device: torch.device,
    workers: int | None,
) -> Features:
    dtype = getattr(torch, key.dtype)
    draft = preprocessing.resize_size
    blocks, labels = [], []
    for view in range(key.views):
        # View 0 is the deterministic eval view; further views are random augmentations, seeded per view.
        transform = preprocessing.eval_transform() if view == 0 else preprocessing.train_transform(key.augment)
        dataset = ImageDataset(split, transform, draft_size=draft)
        label = f"{key.split} features" + (f" (view {view + 1}/{key.views})" if key.views > 1 else "")
        blocks.append(
            extract(model_features, dataset, device, dtype, workers=workers, description=label, seed=key.seed + view)
        )
        labels.append(torch.tensor([lbl for _, lbl in split.files]))
    return Features(torch.cat(blocks), torch.cat(labels), [str(p) for p, _ in split.files])

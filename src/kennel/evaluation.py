"""Test-split evaluation: accuracy, per-class scores, the confusion matrix and the mistakes worth looking at.

``summarize`` works on logits, wherever they came from (cached features through the head, or a full forward via
``predict_logits``), so the training job, the report and later tools share one definition of every number. Reading
a saved evaluation needs no PyTorch: a report imports this module without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel.atomic import atomic_path, atomic_write_json

if TYPE_CHECKING:
    import torch

    from kennel.preprocessing import Preprocessing

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.npy"
MISTAKES_FILE = "mistakes.json"


@dataclass
class EvaluationResult:
    """Everything ``summarize`` computed. ``confusion[t, p]`` counts photos of class ``t`` predicted as ``p``."""

    class_names: list[str]
    count: int
    top1: float
    top5: float
    loss: float
    per_class: list[dict[str, Any]]  # name, precision, recall, f1, support; in class order
    confusion: np.ndarray = field(repr=False)
    confused_pairs: list[dict[str, Any]]  # true, predicted, count; most frequent first
    mistakes: list[dict[str, Any]]  # file, true, predicted, probability, true_probability; most confident first
    topk: int = 5  # the k behind ``top5`` (smaller when there are fewer than 5 classes)

    def metrics(self) -> dict[str, Any]:
        """The JSON-ready summary written to ``metrics.json`` (no confusion matrix, no mistakes)."""
        return {
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
            "topk": self.topk,
            "loss": self.loss,
            "num_classes": len(self.class_names),
            "class_names": self.class_names,
            "per_class": self.per_class,
            "confused_pairs": self.confused_pairs,
        }

    def save(self, folder: Path | str) -> Path:
        """Write ``metrics.json``, ``confusion.npy`` and ``mistakes.json`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / METRICS_FILE, self.metrics())
        with atomic_path(folder / CONFUSION_FILE) as tmp, open(tmp, "wb") as handle:
            np.save(handle, self.confusion.astype(np.int64), allow_pickle=False)
        atomic_write_json(folder / MISTAKES_FILE, self.mistakes)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> EvaluationResult:
        """Read what :meth:`save` wrote; a missing ``confusion.npy`` or ``mistakes.json`` reads as empty."""
        folder = Path(folder)
        path = folder / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no evaluation ({METRICS_FILE} is missing)")
        data = json.loads(path.read_text())
        names = list(data["class_names"])
        confusion_path = folder / CONFUSION_FILE
        if confusion_path.is_file():
            confusion = np.load(confusion_path, allow_pickle=False)
        else:
            confusion = np.zeros((len(names), len(names)), dtype=np.int64)
        mistakes_path = folder / MISTAKES_FILE
        mistakes = json.loads(mistakes_path.read_text()) if mistakes_path.is_file() else []
        return cls(
            class_names=names,
            count=int(data["count"]),
            top1=float(data["top1"]),
            top5=float(data["top5"]),
            loss=float(data["loss"]),
            per_class=list(data["per_class"]),
            confusion=confusion,
            confused_pairs=list(data.get("confused_pairs", [])),
            mistakes=mistakes,
            topk=int(data.get("topk", 5)),
        )


def confusion_matrix(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    import torch

    flat = targets.long() * num_classes + predicted.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def per_class_scores(confusion: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall and F1 per class; a class never predicted (or never present) scores 0, not NaN."""
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    rows = []
    for i, name in enumerate(class_names):
        precision = true_positive[i] / predicted[i] if predicted[i] else 0.0
        recall = true_positive[i] / support[i] if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"name": name, "precision": precision, "recall": recall, "f1": f1, "support": int(support[i])})
    return rows


def most_confused(confusion: np.ndarray, class_names: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:limit]
    pairs = []
    for flat in order:
        true, pred = divmod(int(flat), off.shape[1])
        if off[true, pred] == 0:
            break
        pairs.append({"true": class_names[true], "predicted": class_names[pred], "count": int(off[true, pred])})
    return pairs


def summarize(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_names: list[str],
    files: list[str] | None = None,
    mistakes: int = 32,
) -> EvaluationResult:
    """Score ``logits`` ``[N, C]`` against integer ``targets`` ``[N]``. ``files`` (one per row) name the
    photos in the list of mistakes, the most confident wrong predictions first."""
    import torch

    logits = logits.detach().float().cpu()
    targets = targets.detach().long().cpu()
    count, num_classes = logits.shape
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for logits with {num_classes} columns")
    if targets.shape != (count,):
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match {count} rows of logits")
    if files is not None and len(files) != count:
        raise ValueError(f"{len(files)} files for {count} rows of logits")
    if count == 0:
        raise ValueError("nothing to evaluate: no rows of logits")
    k = min(5, num_classes)
    top_k = logits.topk(k, dim=1).indices
    predicted = top_k[:, 0]  # not argmax: on ties the two may differ, and then top-1 could exceed top-5
    confusion = confusion_matrix(predicted, targets, num_classes)
    return EvaluationResult(
        class_names=list(class_names),
        count=count,
        top1=(predicted == targets).float().mean().item(),
        top5=(top_k == targets[:, None]).any(dim=1).float().mean().item(),
        loss=torch.nn.functional.cross_entropy(logits, targets).item(),
        per_class=per_class_scores(confusion, class_names),
        confusion=confusion,
        confused_pairs=most_confused(confusion, class_names),
        mistakes=_confident_mistakes(logits, targets, predicted, class_names, files, mistakes),
        topk=k,
    )


def _confident_mistakes(logits, targets, predicted, class_names, files, limit: int) -> list[dict[str, Any]]:
    probabilities = logits.softmax(dim=1)
    confidence = probabilities.gather(1, predicted[:, None]).squeeze(1)
    wrong = (predicted != targets).nonzero().squeeze(1)
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:limit]
    return [
        {
            "index": int(i),
            "file": str(files[i]) if files is not None else None,
            "true": class_names[targets[i]],
            "predicted": class_names[predicted[i]],
            "probability": confidence[i].item(),
            "true_probability": probabilities[i, targets[i]].item(),
        }
        for i in order.tolist()
    ]


def predict_logits(
    model: torch.nn.Module,
    files: Sequence[Path | str],
    preprocessing: Preprocessing,
    device: torch.device | str,
    batch_size: int = 32,
    workers: int | None = None,
) -> torch.Tensor:
    """A full forward of ``model`` (in eval mode) over image files; the ``[N, C]`` logits on the CPU.

    Photos are decoded as the feature cache decodes them (JPEG draft at the resize size), so logits from here
    and from cached features agree.
    """
    import torch

    from kennel.data.dataset import ImageDataset, make_loader

    device = torch.device(device)
    dataset = ImageDataset([(Path(f), 0) for f in files], preprocessing.eval_transform(), preprocessing.resize_size)
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = [model(images.to(device, non_blocking=True)).float().cpu() for images, _ in loader]
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0, getattr(model, "num_classes", 0))
    return torch.cat(outputs)

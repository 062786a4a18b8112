"""Training benchmark: the plain loop of a SageMaker tutorial versus kennel's default recipe, same backbone.

The reference freezes the backbone, adds a linear head, trains it with Adam, and re-runs the backbone over
every photo in every epoch (eager PyTorch, fp32). kennel computes the frozen backbone's features once (fast
decode, channels-last, reduced precision where the CPU has it) and trains the head on them.

    python benchmarks/train.py --data ../shared/data/dogs10

Prints test accuracy and wall time for each, and their ratio. Both runs start with a cold cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets


def reference_loop(
    data: Path, backbone: str, epochs: int, batch_size: int, lr: float, frozen_bn: bool
) -> dict[str, float]:
    """The tutorial's loop, written as such tutorials write it."""
    from kennel.models import get_backbone
    from kennel.models.weights import load_pretrained

    spec = get_backbone(backbone)
    pre = spec.preprocessing
    train_tf, eval_tf = pre.train_transform("light"), pre.eval_transform()
    train_set = datasets.ImageFolder(str(data / "train"), train_tf)
    valid_set = datasets.ImageFolder(str(data / "valid"), eval_tf)
    test_set = datasets.ImageFolder(str(data / "test"), eval_tf)
    loaders = {
        name: DataLoader(ds, batch_size=batch_size, shuffle=name == "train", num_workers=1)
        for name, ds in (("train", train_set), ("valid", valid_set), ("test", test_set))
    }
    # Pretrained network, every parameter frozen, a new linear head. The tutorial calls model.train() each
    # epoch, which puts the frozen backbone's BatchNorm layers back in training mode; --frozen-bn keeps them
    # in eval mode, a stronger (and faster) baseline.
    network = spec.build()
    load_pretrained(spec, network)
    network.requires_grad_(False)
    parts = spec.split(network)
    head = nn.Linear(parts.feature_dim, len(train_set.classes))
    model = nn.Sequential(parts.features, head)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def accuracy(loader: DataLoader) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in loader:
                correct += (model(images).argmax(1) == labels).sum().item()
                total += len(labels)
        return correct / total

    for epoch in range(epochs):
        model.train()
        if frozen_bn:
            parts.features.eval()
        for images, labels in loaders["train"]:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        print(f"  reference epoch {epoch + 1}/{epochs}: valid accuracy {accuracy(loaders['valid']):.4f}", flush=True)
    return {"test_accuracy": accuracy(loaders["test"])}


def kennel_default(data: Path, backbone: str) -> dict[str, float]:
    from kennel.config import load_config
    from kennel.job import train

    config = load_config(overrides={"data.root": str(data), "model.backbone": backbone, "tracking": False})
    record = train(config, stream=None)
    return {"test_accuracy": record.metrics["test_accuracy"]}


def timed(run, *args) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    result = run(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dogs10")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=5, help="reference loop epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="reference loop learning rate")
    parser.add_argument(
        "--frozen-bn", action="store_true", help="reference: keep the backbone's BatchNorm in eval mode"
    )
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"dataset {args.data} not found (pass --data DIR)")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as home:
        # A cold, private cache: kennel's time includes computing the features.
        os.environ["KENNEL_HOME"], os.environ["KENNEL_CACHE"] = home, str(Path(home) / "cache")
        print(f"kennel default recipe on {args.data} ({args.backbone}) ...", flush=True)
        ours, ours_s = timed(kennel_default, args.data, args.backbone)
        print(f"reference loop, {args.epochs} epochs ...", flush=True)
        ref, ref_s = timed(
            reference_loop, args.data, args.backbone, args.epochs, args.batch_size, args.lr, args.frozen_bn
        )
    cpu = f"{os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    print(f"\n{args.data.name}, {args.backbone}, {cpu}")
    print(f"{'run':<44}{'test accuracy':>15}{'wall time (s)':>15}")
    bn = "frozen BN" if args.frozen_bn else "tutorial BN"
    reference = f"reference loop ({args.epochs} epochs, {bn})"
    print(f"{reference:<44}{ref['test_accuracy']:>15.4f}{ref_s:>15.1f}")
    print(f"{'kennel default recipe':<44}{ours['test_accuracy']:>15.4f}{ours_s:>15.1f}")
    gain = ours["test_accuracy"] - ref["test_accuracy"]
    print(f"\nkennel vs reference: accuracy {gain:+.4f}, wall time ratio {ours_s / ref_s:.3f}")


if __name__ == "__main__":
    main()

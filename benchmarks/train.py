"""Training benchmark: the plain loop of a SageMaker tutorial versus ``kennel train --data DIR``, the default recipe.

The reference freezes a pretrained backbone (``--backbone``, tf_efficientnet_lite0 in place of the tutorial's
resnet, whose weights are not offline), adds a linear head, trains it with Adam, and re-runs the backbone over every
photo in every epoch (eager PyTorch, fp32). kennel runs as a user runs it, ``kennel train --data DIR`` in a process
of its own with an empty KENNEL_HOME and KENNEL_CACHE (the default recipe: tf_efficientnet_lite0 and lite2 fused,
their features computed once on the backend measured fastest here, the head trained on them; ``--model`` another).

    python benchmarks/train.py --data ../shared/data/dogs10

Prints the CPU and its flags, the load average around each run, and for each its test accuracy, wall time and CPU
time (user + system, its threads and child processes included), then their ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
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


def kennel_default(data: Path, model: str | None, home: Path) -> dict[str, float]:
    """``kennel train --data DATA`` in a process of its own, with an empty home and cache."""
    command = [sys.executable, "-m", "kennel", "train", "--data", str(data), "--json"]
    command += ["--model", model] if model else []
    env = {**os.environ, "KENNEL_HOME": str(home / "home"), "KENNEL_CACHE": str(home / "cache")}
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"kennel train failed with exit status {done.returncode}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    extraction = record.get("engine", {}).get("extraction", {})
    print(f"  kennel: features {extraction.get('label')} ({extraction.get('reason')})", flush=True)
    return {"test_accuracy": record["metrics"]["test_accuracy"], "job_dir": record["job_dir"]}


def report_after(job_dir: str) -> tuple[float, float]:
    """Wait for the ``kennel report JOB`` process that ``kennel train`` leaves making the gallery's heatmaps (after
    the job, at low priority), so the reference loop does not share the cores with it; its wall time from now and
    CPU time."""
    import psutil

    def reporting(process: psutil.Process) -> bool:
        command = process.info["cmdline"] or []
        return "report" in command and Path(command[-1]).name == Path(job_dir).name

    started, cpu = time.perf_counter(), 0.0
    for process in [p for p in psutil.process_iter(["cmdline"]) if reporting(p)]:
        seen = 0.0
        with contextlib.suppress(psutil.Error):  # it ended
            while process.status() != psutil.STATUS_ZOMBIE:
                times = process.cpu_times()
                seen = times.user + times.system
                time.sleep(0.1)
        cpu += seen
    return time.perf_counter() - started, cpu


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(run, *args) -> tuple[dict[str, float], float, float, str]:
    """``run``'s result, its wall time, its CPU time and the load average (1, 5, 15 minutes) before and after."""
    before, started, cpu = load(), time.perf_counter(), cpu_seconds()
    result = run(*args)
    return result, time.perf_counter() - started, cpu_seconds() - cpu, f"{before} -> {load()}"


def main() -> None:
    from kennel.allocator import keep_buffers_in_heap
    from kennel.inference import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dogs10")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="reference loop backbone")
    parser.add_argument("--model", default=None, help="kennel's backbone (default: the default recipe's)")
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
    print(f"CPU: {machine.describe_cpu()}; torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as home:
        print(f"kennel train --data {args.data}{' --model ' + args.model if args.model else ''}, cold ...", flush=True)
        ours = timed(kennel_default, args.data, args.model, Path(home))
        pages = report_after(ours[0]["job_dir"])
    # The reference with glibc's allocator thresholds raised as kennel raises them in its own process (so it ran
    # when both ran in this one): eager PyTorch runs about twice as fast with them, a stronger baseline.
    keep_buffers_in_heap()
    print(f"reference loop ({args.backbone}), {args.epochs} epochs ...", flush=True)
    ref = timed(reference_loop, args.data, args.backbone, args.epochs, args.batch_size, args.lr, args.frozen_bn)
    print(f"\n{args.data.name}; {machine.describe_cpu()}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'run':<44}{'test accuracy':>15}{'wall time (s)':>15}{'CPU time (s)':>14}  load average (1, 5, 15 min)")
    bn = "frozen BN" if args.frozen_bn else "tutorial BN"
    rows = (
        (f"reference loop ({args.backbone}, {args.epochs} epochs, {bn})", ref),
        (f"kennel train --data ({args.model or 'default recipe'}), cold", ours),
    )
    for name, (result, wall, cpu, loads) in rows:
        print(f"{name:<44}{result['test_accuracy']:>15.4f}{wall:>15.1f}{cpu:>14.1f}  {loads}")
    print(f"{'  then its report heatmaps, in the background':<44}{'':>15}{pages[0]:>15.1f}{pages[1]:>14.1f}")
    gain = ours[0]["test_accuracy"] - ref[0]["test_accuracy"]
    print(
        f"\nkennel vs reference: accuracy {gain:+.4f}, wall time ratio {ours[1] / ref[1]:.3f}, "
        f"CPU time ratio {ours[2] / ref[2]:.3f}"
    )


if __name__ == "__main__":
    main()

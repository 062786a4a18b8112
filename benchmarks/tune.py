"""Tuning benchmark: a 20-trial study (TPE, the `default` space, 2 parallel workers) next to the default training
job, on the same data with the same backbone.

    python benchmarks/tune.py --data ../shared/data/dogs10

Both start from a cold, private kennel home and cache. The study's time includes computing the backbone's
features once; its trials train heads on them. Prints the wall time, the trials' time distribution, how many
were pruned, and the best trial's validation and test accuracy beside the default job's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dogs10")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--space", default="default")
    parser.add_argument("--strategy", default="tpe")
    parser.add_argument("--pruner", default="median")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"dataset {args.data} not found (pass --data DIR)")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        os.environ["KENNEL_HOME"], os.environ["KENNEL_CACHE"] = home, str(Path(home) / "cache")
        from kennel.config import load_config
        from kennel.job import train, warm_feature_cache
        from kennel.jobs import load_job
        from kennel.tune import TuneRequest, tune
        from kennel.tune.results import JOB_ID, outcome
        from kennel.tune.study import open_study

        base = {"data": {"root": str(args.data)}, "model": {"backbone": args.backbone}}
        started = time.perf_counter()
        print(f"feature cache for {args.backbone} on {args.data} (cold) ...", flush=True)
        warm_feature_cache(load_config(base=base))
        extraction_s = time.perf_counter() - started
        settings = {"strategy": args.strategy, "pruner": args.pruner}
        session = {"trials": args.trials, "parallel": args.parallel}
        record = tune(TuneRequest("benchmark", args.space, base, settings, session), stream=sys.stdout)
        study_s = time.perf_counter() - started

        print("default training job ...", flush=True)
        job_started = time.perf_counter()
        default = train(load_config(base=base, overrides={"name": "default"}), stream=None)
        default_s = time.perf_counter() - job_started

        trials = open_study(record).get_trials(deepcopy=False)
        seconds = [t.duration.total_seconds() for t in trials if t.duration and outcome(t) != "interrupted"]
        best = load_job(record.best["job"]) if record.best else None
        best_trial = next((t for t in trials if best and t.user_attrs.get(JOB_ID) == best.id), None)
    load_after = os.getloadavg()[0]

    import torch

    cpu = f"{os.cpu_count()} cores, torch {torch.__version__}"
    print(f"\n{args.data.name}, {args.backbone}, {cpu}; load average {load_before:.2f} before, {load_after:.2f} after")
    print(
        f"study: {args.trials} trials, {args.strategy}, {args.pruner} pruning, space {args.space}, "
        f"{args.parallel} workers ({record.session.get('threads')} torch threads each)"
    )
    print(f"  wall time {study_s:.1f} s, of which computing the backbone's features {extraction_s:.1f} s")
    print(
        f"  trial time (s): min {min(seconds):.1f}  median {statistics.median(seconds):.1f}  "
        f"p90 {percentile(seconds, 0.9):.1f}  max {max(seconds):.1f}  sum {sum(seconds):.1f}"
    )
    counts = record.counts
    print(
        f"  trials: {counts.get('complete', 0)} completed, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('failed', 0)} failed"
    )
    print(f"\n{'run':<40}{'valid accuracy':>16}{'test accuracy':>15}{'wall time (s)':>15}")
    rows = [("default training job (cached features)", default, default_s)]
    if best is not None:
        rows.append((f"best trial (trial {best_trial.number})", best, best.duration_s or 0.0))
    for name, job, wall in rows:
        metrics = job.metrics
        print(f"{name:<40}{metrics['best_valid_accuracy']:>16.4f}{metrics['test_accuracy']:>15.4f}{wall:>15.1f}")
    if best is not None:
        params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best_trial.params.items())
        print(f"\nbest hyperparameters: {params}")
        gain = best.metrics["test_accuracy"] - default.metrics["test_accuracy"]
        print(f"best trial vs default job: test accuracy {gain:+.4f}")
    if max(load_before, load_after) > (os.cpu_count() or 1) * 0.5:
        print("warning: other work was running on this machine; the times above are not reliable", file=sys.stderr)


if __name__ == "__main__":
    main()

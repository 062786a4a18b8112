"""Profiler overhead: the training loop's time per step with profiling off, with the default profiler (system
sampler, step records, rules) and with a torch.profiler window, in one run.

    python benchmarks/profiler.py                       # ../shared/data/dogs10, 3 rounds
    python benchmarks/profiler.py --data DIR --rounds 5

Two workloads: kennel's default recipe (a head trained on cached tf_efficientnet_lite0 features: steps of about a
millisecond, where any per-step cost shows most) and the tiny backbone fine-tuned on the photos themselves (steps
that decode JPEGs and run a network). "Off" means no sampler and no profiler observer; the loop's own step clock
always runs. Each configuration runs once per round, in a rotating order, and the table shows the median over
the rounds of the fit's wall time and of the process's CPU time (all its threads, the sampler's included) per
step, each as a ratio to "off". CPU time is the steadier figure on a machine that other work shares.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kennel.engine import LoopState, Observer

CONFIGS = {
    "off": {"profiler.enabled": False},
    "default": {},
    "torch.profiler window": {"profiler.trace.enabled": True},
}
COMMON = {"tracking": False, "export_onnx": False, "evaluate_test": False, "profiler.report": False}
WORKLOADS = {
    "cached features (default recipe)": {"epochs": 15},
    "photos, tiny backbone fine-tuned": {
        "model.backbone": "tiny",
        "model.pretrained": False,
        "model.freeze": 0,
        "feature_cache": False,
        "data.workers": 0,
        "epochs": 1,
    },
}


def own_costs(repeats: int = 7) -> dict[str, float]:
    """The profiler's own work, timed in isolation (steadier than a difference of two busy runs), each the median
    of ``repeats``: one step record, one system sample, one rule check over as many records as a running job's
    check reads."""
    import types

    from kennel.config import ProfilerConfig
    from kennel.profiler.session import LIVE_RECORDS, ProfilerSession

    def median_time(work, count: int = 1) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(count):
                work()
            times.append((time.perf_counter() - started) / count)
        return statistics.median(times)

    with tempfile.TemporaryDirectory() as folder:
        session = ProfilerSession(folder, ProfilerConfig(report=False, check_every_s=1e9))
        observer = session.observer()
        phases = dict.fromkeys(("data", "transfer", "forward", "backward", "optimizer"), 1e-4)
        state = types.SimpleNamespace(global_step=0, epoch=0, step_times=phases, device=torch.device("cpu"))
        observer.on_fit_start(state)

        def record() -> None:
            state.global_step += 1
            observer.on_batch_end(state)

        record_s = median_time(record, 5_000)
        sample_s = median_time(session.sampler.sample, 20)
        for _ in range(LIVE_RECORDS):
            session.sampler.samples.append(session.sampler.sample())
        check_s = median_time(session.check)
        session.finish()
    return {"record_s": record_s, "sample_s": sample_s, "check_s": check_s, "check_every_s": 10.0, "interval_s": 0.5}


class FitTimer(Observer):
    """Wall and process CPU time from the fit's start to its end (it runs after every other observer)."""

    def on_fit_start(self, state: LoopState) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_fit_end(self, state: LoopState) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.steps = state.global_step


def run(data: Path, workload: dict, config: dict) -> tuple[float, float, int]:
    from kennel.config import load_config
    from kennel.job import train

    timer = FitTimer()
    overrides = {"data.root": str(data), **COMMON, **workload, **config}
    record = train(load_config(overrides=overrides), observers=[timer], stream=None)
    if record.status != "completed":
        sys.exit(f"benchmark job {record.id} ended {record.status}: {record.error}")
    return timer.wall / timer.steps, timer.cpu / timer.steps, timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dogs10")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, help="torch compute threads (default: torch's); 1 steadies a machine others share"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        sys.exit(f"dataset {args.data} not found (pass --data DIR)")
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["KENNEL_HOME"] = home  # jobs go to a scratch home; the feature cache stays the user's
        for name, workload in WORKLOADS.items():
            print(f"{name}: warming the caches ...", file=sys.stderr, flush=True)
            run(args.data, workload, CONFIGS["off"])
            names = list(CONFIGS)
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for config in order:
                    results.setdefault((name, config), []).append(run(args.data, workload, CONFIGS[config]))
                    wall, cpu, _ = results[(name, config)][-1]
                    print(f"  round {round_ + 1} {config:<22} {wall * 1e3:8.3f} ms/step wall", file=sys.stderr)
    load_after = os.getloadavg()

    print(f"\n{args.data.name}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(load_after)}")
    header = f"{'workload':<34}{'profiling':<24}{'steps':>6}{'wall ms/step':>14}{'vs off':>8}"
    header += f"{'CPU ms/step':>13}{'vs off':>8}"
    print(header)
    print("-" * len(header))
    for name in WORKLOADS:
        wall_off = statistics.median(r[0] for r in results[(name, "off")])
        cpu_off = statistics.median(r[1] for r in results[(name, "off")])
        for config in CONFIGS:
            rows = results[(name, config)]
            wall, cpu = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
            label = name if config == "off" else ""
            print(
                f"{label:<34}{config:<24}{rows[0][2]:>6}{wall * 1e3:>14.3f}{wall / wall_off:>8.3f}"
                f"{cpu * 1e3:>13.3f}{cpu / cpu_off:>8.3f}"
            )
    print(f"\nmedians of {args.rounds} rounds; ratios are to profiling off on the same workload in this run")
    costs = own_costs()
    sampler_share = costs["sample_s"] / costs["interval_s"]
    check_share = costs["check_s"] / costs["check_every_s"]
    print("\nthe default profiler's own work, timed alone:")
    every = f"every {costs['interval_s']:g} s ({sampler_share:.2%})"
    print(f"  step record (observer)     {costs['record_s'] * 1e6:8.1f} us per step")
    print(f"  system sample              {costs['sample_s'] * 1e3:8.2f} ms {every}")
    every = f"every {costs['check_every_s']:g} s ({check_share:.2%})"
    print(f"  rule check                 {costs['check_s'] * 1e3:8.2f} ms {every}")
    for name in WORKLOADS:
        step = statistics.median(r[0] for r in results[(name, "off")])
        share = costs["record_s"] / step + sampler_share + check_share
        print(f"  on a {step * 1e3:.3f} ms step ({name}): {share:.2%} of the step time")
    if max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1):
        print("note: other work shared the CPU during this run; rerun on a quiet machine for firm ratios")


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()

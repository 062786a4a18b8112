"""Soak test of ``kennel serve``: many requests at high concurrency, no 5xx, and the server's memory flat.

    python benchmarks/serve_soak.py                      # 10,000 requests at concurrency 32
    python benchmarks/serve_soak.py --model JOB_OR_DIR --requests 20000

The bodies are real JPEGs from ``../shared/data/dogs10`` with one in twenty replaced by a bad body (truncated
JPEG, text, an empty body), so the error path runs as often as a busy endpoint would see it. The requests go in
chunks; after each chunk the server's resident memory (RSS, psutil) is read. The first ``--warmup-chunks`` fill
allocator pools and caches; after them, RSS moves up and down by tens of MB with the batches in flight, so memory
counts as flat when the peak of the second half of the readings is within ``--tolerance`` of the first half's
peak, and the least-squares slope is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter

import psutil
from serve import add_model_arguments, load, pick_photos, start, train_model

from kennel.localhost import free_port, stop_process


def bad_bodies(good: bytes) -> list[bytes]:
    """Bodies the endpoint must refuse with a 4xx: a JPEG cut in half, plain text, nothing."""
    return [good[: len(good) // 2], b"this is not a photo", b""]


def mixed(bodies: list[bytes], bad_every: int) -> list[bytes]:
    """``bodies`` with every ``bad_every``-th one replaced by a bad body."""
    bad = bad_bodies(bodies[0])
    return [bad[i % len(bad)] if i % bad_every == bad_every - 1 else body for i, body in enumerate(bodies)]


def rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children, in MB."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 1e6


def slope_mb_per_1000(readings: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS against requests, in MB per 1,000 requests (0 for fewer than two readings)."""
    if len(readings) < 2:
        return 0.0
    return 1000 * statistics.linear_regression([n for n, _ in readings], [mb for _, mb in readings]).slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in all")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=1000, help="requests between memory readings")
    parser.add_argument("--warmup-chunks", type=int, default=2, help="chunks before the memory baseline")
    parser.add_argument("--bad-every", type=int, default=20, help="one bad body in this many")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed growth after warm-up (0.05 = 5%%)")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from kennel.cli.predict import resolve_model

    model = resolve_model(args.model) if args.model else train_model(args.train_data)
    photos = pick_photos(args.photos, 300, seed=0)
    if not photos:
        sys.exit(f"no JPEG photos under {args.photos}")
    bodies = mixed([p.read_bytes() for p in photos], args.bad_every)
    port = free_port()
    command = [sys.executable, "-m", "kennel", "serve", str(model), "--port", str(port)]
    process = start(command, port, "kennel serve", {})
    readings = [(0, rss_mb(process.pid))]
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    try:
        while sum(statuses.values()) < args.requests:
            remaining = args.requests - sum(statuses.values())
            cell = load(port, bodies, args.concurrency, float("inf"), warmup=0, limit=min(args.chunk, remaining))
            statuses.update(cell.statuses)
            readings.append((sum(statuses.values()), rss_mb(process.pid)))
            print(f"  {readings[-1][0]:>6} requests, RSS {readings[-1][1]:.0f} MB", file=sys.stderr)
    finally:
        seconds = time.perf_counter() - started
        stop_process(process)

    console = Console(width=100)
    table = Table(title=f"kennel serve, {args.requests:,} requests at concurrency {args.concurrency}")
    for column in ("requests so far", "server RSS (MB)"):
        table.add_column(column, justify="right")
    for count, megabytes in readings:
        table.add_row(f"{count:,}", f"{megabytes:.0f}")
    console.print(table)
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    steady = readings[args.warmup_chunks + 1 :] or readings[-1:]
    first, second = steady[: max(1, len(steady) // 2)], steady[len(steady) // 2 :]
    first_peak, second_peak = max(mb for _, mb in first), max(mb for _, mb in second)
    growth = second_peak / first_peak - 1
    total = sum(statuses.values())
    console.print(f"statuses: {dict(sorted(statuses.items()))} in {seconds:.0f} s ({total / seconds:.1f} req/s)")
    console.print(f"5xx: {server_errors} (target 0)")
    console.print(
        f"memory after warm-up, peak of each half: {first_peak:.0f} MB -> {second_peak:.0f} MB ({growth:+.1%}, "
        f"target within {args.tolerance:.0%}): {'flat' if growth <= args.tolerance else 'NOT flat'}; "
        f"slope {slope_mb_per_1000(steady):+.1f} MB per 1,000 requests"
    )
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Huge images against ``kennel serve``: latency, the server's peak memory, and whether it gives the memory back.

    python benchmarks/serve_images.py --model JOB_OR_DIR    # or no --model: trains lite0 on breeds4 first
    python benchmarks/serve_images.py --model JOB_OR_DIR --max-pixels 50000000

Each case starts a fresh ``kennel serve``, warms it with a few ordinary photos, reads its resident memory (RSS,
psutil), then sends ``--concurrency`` copies of one body at once while a thread samples the RSS every 20 ms, and
reads the RSS again after ``--settle`` seconds. The bodies are flat-colour images, so a 49 Mpx PNG is about 160 KB
and passes the body limit: a decompression bomb in miniature. The first case, ordinary 640x480 JPEGs, is the
baseline the latencies are compared with; memory after each case is compared with memory before it (target:
within 20%). A case over the server's pixel limit is refused with a 422 and costs nearly nothing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serve import add_model_arguments, start, train_model
from serve_soak import rss_mb

from kennel.localhost import free_port, stop_process

TARGET_RETURN = 1.2  # RSS after a burst over RSS before it


@dataclass
class Case:
    name: str
    body: bytes
    content_type: str


@dataclass
class Result:
    case: Case
    statuses: list[int]
    latencies_ms: list[float]
    before_mb: float
    peak_mb: float
    after_mb: float


def flat_image(width: int, height: int, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, fmt, **options)
    return buffer.getvalue()


def cases() -> list[Case]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # this process makes the bombs; the server is the one that must refuse them
    return [
        Case("640x480 JPEG (baseline)", flat_image(640, 480, "JPEG"), "image/jpeg"),
        Case("6000x4000 PNG (24 Mpx)", flat_image(6000, 4000, "PNG", optimize=True), "image/png"),
        Case("7000x7000 PNG (49 Mpx)", flat_image(7000, 7000, "PNG", optimize=True), "image/png"),
        Case("7000x7000 JPEG (49 Mpx)", flat_image(7000, 7000, "JPEG", quality=90), "image/jpeg"),
        Case("7000x7000 progressive JPEG", flat_image(7000, 7000, "JPEG", quality=90, progressive=True), "image/jpeg"),
    ]


class PeakSampler:
    """The highest RSS of a process seen while the ``with`` block runs, read every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def send(port: int, body: bytes, content_type: str) -> tuple[int, float]:
    import requests

    started = time.perf_counter()
    response = requests.post(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"content-type": content_type}, timeout=300
    )
    return response.status_code, 1000 * (time.perf_counter() - started)


def burst(port: int, case: Case, concurrency: int) -> list[tuple[int, float]]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: send(port, case.body, case.content_type), range(concurrency)))


def run_case(command: list[str], case: Case, warmup: Case, concurrency: int, settle: float) -> Result:
    port = free_port()
    process = start([*command, "--port", str(port)], port, "kennel serve", {})
    try:
        burst(port, warmup, concurrency)  # thread pool, batcher and model warm before the baseline reading
        time.sleep(settle)
        before = rss_mb(process.pid)
        with PeakSampler(process.pid) as sampler:
            answers = burst(port, case, concurrency)
        time.sleep(settle)
        after = rss_mb(process.pid)
    finally:
        stop_process(process)
    statuses = [status for status, _ in answers]
    return Result(case, statuses, [ms for _, ms in answers], before, sampler.peak, after)


def print_report(results: list[Result], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from kennel.inference.machine import describe_cpu

    console = Console(width=140)
    baseline = statistics.median(results[0].latencies_ms)
    table = Table(title=title, title_justify="left")
    columns = ["case", "statuses", "p50 ms", "max ms", "p50 / baseline", "RSS before", "peak", "after", "after/before"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "statuses") else "right")
    for r in results:
        counts = ", ".join(f"{r.statuses.count(s)}x{s}" for s in sorted(set(r.statuses)))
        ratio = r.after_mb / r.before_mb
        verdict = "green" if ratio <= TARGET_RETURN else "red"
        p50 = statistics.median(r.latencies_ms)
        table.add_row(
            r.case.name,
            counts,
            f"{p50:.0f}",
            f"{max(r.latencies_ms):.0f}",
            f"{p50 / baseline:.1f}",
            f"{r.before_mb:.0f} MB",
            f"{r.peak_mb:.0f} MB",
            f"{r.after_mb:.0f} MB",
            f"[{verdict}]{ratio:.2f}[/{verdict}]",
        )
    console.print(table)
    console.print(f"target: after/before <= {TARGET_RETURN:.2f}; CPU: {describe_cpu()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=10, help="copies of each body sent at once")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before each memory reading")
    parser.add_argument("--max-pixels", type=int, help="the server's pixel limit (default: kennel serve's own)")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()

    from kennel.cli.predict import resolve_model

    model = resolve_model(args.model) if args.model else train_model(args.train_data)
    command = [sys.executable, "-m", "kennel", "serve", str(model)]
    if args.max_pixels:
        command += ["--max-pixels", str(args.max_pixels)]
    every = cases()
    chosen = [every[0], *(c for c in every[1:] if not args.only or args.only in c.name)]
    results = []
    for case in chosen:
        print(f"{case.name} ({len(case.body) / 1000:.0f} KB) x{args.concurrency} ...", file=sys.stderr)
        results.append(run_case(command, case, every[0], args.concurrency, args.settle))
    limit = f"--max-pixels {args.max_pixels:,}" if args.max_pixels else "the default pixel limit"
    print_report(results, f"kennel serve, {args.concurrency} concurrent requests per case, {limit}")


if __name__ == "__main__":
    main()

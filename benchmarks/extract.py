"""Feature-extraction benchmark: photos/s end to end (decode included) of every inference backend that runs here,
and the default training job's wall time with a cold and a warm cache.

    python benchmarks/extract.py                       # dogs10, tf_efficientnet_lite0, CPU (about 2 minutes)
    python benchmarks/extract.py --skip-jobs           # table 1 only
    python benchmarks/extract.py --device cuda         # the CUDA backends (says "no CUDA GPU" where there is none)

Table 1 runs ``Engine.run_dataset`` (decode and preprocess in threads, the forward pass on the backend) over a
fixed subset of dogs10's train photos and over generated 2000x1500 JPEGs (real dogs10 photos upscaled, so the
JPEG entropy is realistic), best of ``--passes`` interleaved passes, each backend warmed up first. Each figure is
also given as a ratio to the baseline (``torch-eager`` fp32; ``torch-cuda`` on CUDA) measured in the same run. The
decode-only row runs the same decode threads with no forward pass: where a backend's end-to-end rate is close to it,
decoding is the bottleneck, not the backend. int8 is calibrated on the train split as a training job does, and
glibc's allocator is tuned as a training job tunes it (``--default-malloc`` leaves it alone: the PyTorch backends
then pay page faults for every batch's activations).

Table 2 runs ``kennel train --data DATA --no-tracking`` twice in subprocesses with their own home and cache:
cold (empty cache: backend measurement, ONNX exports, int8 calibration, features) and warm (same cache).

Everything runs inside private temporary KENNEL_HOME and KENNEL_CACHE folders, removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/dogs10"
DEFAULT_MODEL = "tf_efficientnet_lite0"  # one backbone: the engine's figures per backbone (`--recipe fast`)
BASELINE = {"cpu": "torch-eager", "cuda": "torch-cuda"}
LARGE_SIZE = (2000, 1500)
EXTRA_LIBRARIES = ("torchvision", "timm", "pillow", "numpy")


@dataclass
class Row:
    """One backend (or the decode-only pass): end-to-end photos/s per photo set, or why it did not run."""

    name: str
    precision: str
    rates: dict[str, float] = field(default_factory=dict)
    forward: float | None = None  # photos/s of the forward pass alone, on one preprocessed batch
    open_s: float | None = None  # opening the backend and its first batch (ONNX export, int8 calibration)
    reason: str | None = None


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> str:
    from kennel.inference import machine

    found = machine.library_versions()
    for name in EXTRA_LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(f"{name} {version}" for name, version in found.items())


def spaced(files: list, count: int) -> list:
    """``count`` files evenly spaced over the class-sorted list, so every class is in the subset."""
    step = max(1, len(files) // count)
    return files[::step][:count]


def make_large(files: list, folder: Path, count: int) -> list:
    """Real photos center-cropped to 4:3 and upscaled to 2000x1500 (bicubic), saved as JPEG quality 90."""
    from PIL import Image, ImageOps

    from kennel.data.images import open_rgb
    from kennel.inference.machine import cores

    folder.mkdir(parents=True)

    def one(item: tuple[int, tuple[Path, int]]) -> tuple[Path, int]:
        index, (source, label) = item
        target = folder / f"{index:04d}.jpg"
        ImageOps.fit(open_rgb(source), LARGE_SIZE, method=Image.Resampling.BICUBIC).save(target, quality=90)
        return target, label

    with ThreadPoolExecutor(cores()) as pool:
        return list(pool.map(one, enumerate(spaced(files, count))))


def build_graph(data: Path, model_name: str):
    """The frozen features graph as a training job builds it (``kennel.extraction.plan``): pretrained weights,
    int8 calibrated on the train split."""
    import hashlib

    from kennel.data.fingerprint import split_fingerprint
    from kennel.data.layout import load_layout
    from kennel.extraction import CALIBRATION_PHOTOS, calibration_batches
    from kennel.inference import features_graph
    from kennel.models import available_offline, create_model, get_backbone
    from kennel.models.weights import install_hint

    layout = load_layout(data)
    spec = get_backbone(model_name)
    source = available_offline(spec)
    if source is None:
        sys.exit(f"no offline weights for {model_name}: {install_hint(spec)}")
    model = create_model(spec.name, num_classes=len(layout.classes), freeze="all")
    train, preprocessing = layout["train"], spec.preprocessing
    calibration_id = hashlib.sha256(f"{split_fingerprint(train)}:{CALIBRATION_PHOTOS}".encode()).hexdigest()[:12]
    graph = features_graph(
        model.features,
        model.backbone,
        f"{source.kind}:{source.where}",
        preprocessing.input_size,
        calibration=lambda: calibration_batches(train, preprocessing),
        calibration_id=calibration_id,
    )
    return graph, layout, preprocessing


def own_module(graph):
    """The graph with a private copy of its module: a PyTorch backend converts the module it opens in place
    (``.to(memory_format=...)``), so backends opened side by side on one module would run each other's weight
    layout (torch-eager on channels-last weights, say). The ONNX exports are keyed by identity and shared."""
    import copy
    from dataclasses import replace

    module = copy.deepcopy(graph.module())
    return replace(graph, module=lambda: module)


def decode_only(dataset, batch_size: int) -> float:
    from kennel.inference.pipeline import batches

    started = time.perf_counter()
    for _ in batches(dataset, batch_size):
        pass
    return len(dataset) / (time.perf_counter() - started)


def forward_only(engine, batch, synchronize) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        engine(batch)
        synchronize()
        best = min(best, time.perf_counter() - started)
    return len(batch) / best


def measure_backends(graph, datasets: dict, device, passes: int) -> list[Row]:
    """Warm every backend that can run here, then best-of-``passes`` end-to-end photos/s, passes interleaved."""
    import torch

    from kennel.features import EXTRACTION_BATCH
    from kennel.inference import BACKENDS, open_engine
    from kennel.inference.pipeline import batches

    first = next(iter(datasets.values()))
    batch, _ = next(batches(first, EXTRACTION_BATCH))
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows, engines = [Row("decode + preprocess only", "-")], {}
    baseline = BASELINE[device.type]
    for name in sorted(BACKENDS, key=lambda name: name != baseline):  # the baseline first, then the registry's order
        backend = BACKENDS.get(name)
        row = Row(name, backend.precision, reason=backend.unavailable(graph, device))
        rows.append(row)
        if row.reason is not None:
            continue
        print(f"  opening {name} ...", flush=True)
        try:
            started = time.perf_counter()
            engine = open_engine(own_module(graph), device, backend=name)
            engine(batch)  # opens the runner: ONNX export, int8 calibration, kernel choice
            synchronize()
            row.open_s = time.perf_counter() - started
        except Exception as exc:  # a backend that fails here is reported, not fatal
            row.reason = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        engines[name] = engine
    for number in range(passes):
        for row in rows[1:]:  # in each pass, so a burst of other load on the machine hits both figures alike
            if row.name in engines:
                row.forward = max(row.forward or 0.0, forward_only(engines[row.name], batch, synchronize))
        for label, dataset in datasets.items():
            print(f"  pass {number + 1}/{passes}, {label} (load average {load()}) ...", flush=True)
            rate = decode_only(dataset, EXTRACTION_BATCH)
            rows[0].rates[label] = max(rows[0].rates.get(label, 0.0), rate)
            for row in rows[1:]:
                if row.name not in engines:
                    continue
                engine = engines[row.name]
                photos, seconds = engine.photos, engine.seconds
                engine.run_dataset(dataset, EXTRACTION_BATCH, description=label)
                rate = (engine.photos - photos) / (engine.seconds - seconds)
                row.rates[label] = max(row.rates.get(label, 0.0), rate)
    return rows


def backend_table(rows: list[Row], labels: list[str], baseline: str) -> Table:
    from kennel.extraction import CALIBRATION_PHOTOS

    table = Table(
        title=f"Table 1: photos/s end to end (decode included), best of passes; x = ratio to {baseline}",
        caption="forward only: one preprocessed batch, no decode. open: the first open builds the ONNX exports "
        f"(int8 quantizes the fp32 export, calibrated on {CALIBRATION_PHOTOS} train photos)",
    )
    table.add_column("backend")
    table.add_column("precision")
    for label in labels:
        table.add_column(f"{label}\nphotos/s", justify="right")
        table.add_column("x", justify="right")
    table.add_column("forward only\nphotos/s", justify="right")
    table.add_column("x", justify="right")
    table.add_column("open +\n1st batch s", justify="right")
    table.add_column("note", max_width=48)
    base = next((row for row in rows if row.name == baseline and row.reason is None), None)

    def pair(value: float | None, reference: float | None) -> list[str]:
        if value is None:
            return ["-", "-"]
        return [f"{value:.1f}", f"{value / reference:.2f}" if reference else "-"]

    for row in rows:
        cells = [row.name, row.precision]
        for label in labels:
            cells += pair(row.rates.get(label), base.rates.get(label) if base else None)
        cells += pair(row.forward, base.forward if base else None)
        cells.append(f"{row.open_s:.1f}" if row.open_s is not None else "-")
        note = row.reason or ("baseline" if row is base else "")
        if row.precision == "-":
            note = "the same decode threads, no forward pass"
        cells.append(note)
        table.add_row(*cells, style="dim" if row.reason else None)
    return table


def run_job(data: Path, device: str, model: str, home: Path, cache: Path) -> dict:
    """``kennel train --data DATA --no-tracking`` in a subprocess: its wall time and its job.json."""
    command = [sys.executable, "-m", "kennel", "train", "--data", str(data), "--no-tracking", "--json"]
    command += ["--device", device, "--model", model]
    env = {**os.environ, "KENNEL_HOME": str(home), "KENNEL_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"seconds": seconds, "error": (done.stderr or done.stdout)[-600:]}
    record = json.loads(done.stdout.strip().splitlines()[-1])
    job = json.loads((Path(record["job_dir"]) / "job.json").read_text())
    return {"seconds": seconds, "job": job}


def job_table(runs: dict[str, dict], command: str) -> Table:
    table = Table(title="Table 2: the default training job, cold and warm cache", caption=command)
    left = ("run", "extraction backend", "why this backend")
    for column in ("run", "wall s", "x cold", "extraction backend", "precision", "photos/s", "features cached"):
        table.add_column(column, justify="left" if column in left else "right")
    table.add_column("test top-1", justify="right")
    table.add_column("why this backend", max_width=56)
    cold = runs.get("cold", {}).get("seconds")
    for name, run in runs.items():
        ratio = f"{run['seconds'] / cold:.2f}" if cold else "-"
        if "error" in run:
            table.add_row(name, f"{run['seconds']:.1f}", ratio, "failed", "", "", "", "", run["error"])
            continue
        extraction = run["job"].get("engine", {}).get("extraction", {})
        rate = extraction.get("photos_per_s")
        accuracy = run["job"].get("metrics", {}).get("test_accuracy")
        why = str(extraction.get("reason", ""))
        check = extraction.get("int8_check")
        if check:
            base = check.get("reference", "fp32")
            figures = f"{base} {check[f'valid_top1_{base}']:.4f}, int8 {check['valid_top1_int8']:.4f}"
            why += f"; int8 check: {figures} valid top-1"
        table.add_row(
            name,
            f"{run['seconds']:.1f}",
            ratio,
            str(extraction.get("backend", "-")),
            str(extraction.get("precision", "-")),
            f"{rate:.1f}" if rate is not None else "- (none computed)",
            str(extraction.get("cached", "-")),
            f"{accuracy:.4f}" if accuracy is not None else "-",
            why,
        )
    return table


def benchmark(args, private: Path, console: Console) -> None:
    import torch

    from kennel.allocator import keep_buffers_in_heap
    from kennel.data.dataset import ImageDataset
    from kennel.inference import machine

    started = time.perf_counter()
    console.print(f"[bold]kennel feature-extraction benchmark[/bold], {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    console.print(f"CPU: {machine.describe_cpu()}; torch threads {torch.get_num_threads()}")
    console.print(f"libraries: {versions()}")
    console.print(f"load average at start (1, 5, 15 min): {load()}")
    if args.device == "cuda" and not torch.cuda.is_available():
        console.print("no CUDA GPU: nothing to measure with --device cuda")
        return
    device = torch.device(args.device)
    allocator = "glibc defaults (--default-malloc)"
    if not args.default_malloc and keep_buffers_in_heap():  # as kennel train and kennel serve run
        allocator = "large buffers kept in the heap, as kennel train and serve set it"
    console.print(f"device: {machine.device_name(device)}; data {args.data}; backbone {args.model}")
    console.print(f"allocator: {allocator}\n")

    graph, layout, preprocessing = build_graph(args.data, args.model)
    transform = preprocessing.eval_transform()
    subset = spaced(list(layout["train"].files), args.photos)
    print(f"generating {args.large} JPEGs of {LARGE_SIZE[0]}x{LARGE_SIZE[1]} ...", flush=True)
    large = make_large(list(layout["train"].files), private / "large", args.large)
    labels = [f"{args.data.name} train ({len(subset)})", f"{LARGE_SIZE[0]}x{LARGE_SIZE[1]} JPEG ({len(large)})"]
    datasets = {
        label: ImageDataset(files, transform, draft_size=preprocessing.resize_size)
        for label, files in zip(labels, (subset, large), strict=True)
    }
    rows = measure_backends(graph, datasets, device, args.passes)
    console.print()
    console.print(backend_table(rows, labels, BASELINE[device.type]))

    if not args.skip_jobs:
        home, cache = private / "job-home", private / "job-cache"
        runs = {}
        for name in ("cold", "warm"):
            print(f"  kennel train, {name} cache ...", flush=True)
            runs[name] = run_job(args.data, args.device, args.model, home, cache)
        command = f"kennel train --data {args.data} --no-tracking --device {args.device} --model {args.model}"
        console.print()
        console.print(job_table(runs, command))
    elapsed = time.perf_counter() - started
    console.print(f"\nload average at end (1, 5, 15 min): {load()}; benchmark wall time {elapsed:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder with train/ valid/ test/")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="backbone")
    parser.add_argument("--photos", type=int, default=640, help="train photos in the dogs10 subset")
    parser.add_argument("--large", type=int, default=128, help="generated 2000x1500 JPEGs")
    parser.add_argument("--passes", type=int, default=2, help="timed passes per backend and photo set; the best counts")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's allocator as it is (a job raises its thresholds)"
    )
    parser.add_argument("--skip-jobs", action="store_true", help="skip table 2 (the training job cold and warm)")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"dataset {args.data} not found (pass --data DIR)")
    console = Console(width=None if sys.stdout.isatty() else 160)
    with tempfile.TemporaryDirectory(prefix="kennel-bench-extract-") as private:
        # Before kennel is imported: a cold cache, no ONNX export or measurement from elsewhere, nothing left behind.
        os.environ["KENNEL_HOME"] = str(Path(private) / "home")
        os.environ["KENNEL_CACHE"] = str(Path(private) / "cache")
        benchmark(args, Path(private), console)


if __name__ == "__main__":
    main()

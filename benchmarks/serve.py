"""Serving benchmark: the model's own throughput versus naive endpoints versus ``kennel serve``.

    python benchmarks/serve.py                      # trains a lite0 model on breeds4 first (about 30 s)
    python benchmarks/serve.py --model JOB_OR_DIR   # or an existing artifact / job

Measurements on the same real JPEGs (a few hundred from ``../shared/data/dogs10``):
  (a) the ceiling: :class:`~kennel.predictor.Predictor` on the photo files, at its best batch size, and the
      median latency of one photo (decode, preprocess, forward, top-k);
  (b) the reference, a naive endpoint as tutorials write it (a minimal FastAPI app, the PyTorch model in eager
      fp32, one forward pass per request), and a stronger naive endpoint on kennel's ONNX Runtime predictor, still
      one photo per call;
  (c) ``kennel serve`` (dynamic batching) as it ships, started as a subprocess; it looks for human faces only in
      photos where it sees no dog, so on these dog photos it rarely does; and once with ``--faces always``, which
      runs OpenCV's face search on every photo, to show what that costs.
  (d) ``kennel serve`` running a user's own ``inference.py`` (SageMaker's handler contract: ``model_fn`` loading a
      resnet18 state dict, random weights, from a model folder; ``input_fn`` for ``image/jpeg``; ``predict_fn``;
      the default ``output_fn``), at concurrency 1 and 32, against the same handlers called directly in this
      process one photo after another (``--no-handlers`` leaves it out).
Each endpoint gets concurrency 1, 8 and 32 from an asyncio load generator in this process (keep-alive
connections, raw HTTP/1.1, so the client costs little of the CPU the servers need). The last lines compare
kennel at c=32 with the ceiling (target >= 70%) and with the reference (target >= 2x), and kennel's p50 at c=1
with the one-photo latency (target <= 1.5x); and the handler endpoint with its handlers called directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kennel.localhost import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONCURRENCY = (1, 8, 32)
HANDLER_CONCURRENCY = (1, 32)
NAIVE_TORCH = "naive, PyTorch eager"  # the reference
NAIVE_ONNX = "naive, ONNX Runtime"
HANDLERS = "kennel serve, inference.py handlers"


@dataclass
class Cell:
    """One load level against one server."""

    server: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int] = field(default_factory=Counter)  # every answer's status, 200s included

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


# --- the model and the photos -------------------------------------------------------------------------------


def train_model(data: Path) -> Path:
    """Train the default lite0 recipe on ``data`` (no tracking) and return its artifact folder."""
    print(f"no --model: training tf_efficientnet_lite0 on {data} ...", file=sys.stderr)
    command = [sys.executable, "-m", "kennel", "train", "--data", str(data), "--no-tracking", "--json"]
    command += ["--model", "tf_efficientnet_lite0", "--name", "serve-benchmark"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    record = json.loads(done.stdout[done.stdout.index("{") :])
    return Path(record["artifact"]) if record.get("artifact") else Path(record["path"]) / "model"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model under test and the photos sent to it (this benchmark's and ``serve_soak.py``'s)."""
    parser.add_argument("--model", help="artifact folder, job folder or job id (default: train lite0 on breeds4)")
    parser.add_argument("--train-data", type=Path, default=SHARED / "breeds4", help="data to train on without --model")
    parser.add_argument("--photos", type=Path, default=SHARED / "dogs10", help="folder of real photos to send")


def pick_photos(data: Path, count: int, seed: int) -> list[Path]:
    """``count`` JPEG files under ``data`` (real JPEG bytes, not PNGs under a .jpg name), in a seeded order."""
    from kennel.data.layout import is_image_file

    files = sorted(p for p in data.rglob("*") if is_image_file(p))
    jpegs = [p for p in files if p.read_bytes()[:3] == b"\xff\xd8\xff"]
    random.Random(seed).shuffle(jpegs)
    return jpegs[:count]


def measure_ceiling(
    model: Path, photos: list[Path], batch_sizes: list[int], repeats: int = 2
) -> tuple[dict[int, float], float]:
    """Photos per second of :class:`Predictor` at each batch size, and one photo's median latency in ms."""
    from kennel.predictor import Predictor

    predictor = Predictor.load(model)
    predictor.predict(photos[:8], batch_size=8)  # warm up
    throughput = dict.fromkeys(batch_sizes, 0.0)
    for _ in range(repeats):  # best of a few rounds, interleaved, so a burst of other load does not pick the winner
        for batch_size in batch_sizes:
            started = time.perf_counter()
            predictor.predict(photos, batch_size=batch_size)
            throughput[batch_size] = max(throughput[batch_size], len(photos) / (time.perf_counter() - started))
    singles = []
    for photo in photos[:100]:
        started = time.perf_counter()
        predictor.predict([photo], batch_size=1)
        singles.append(1000 * (time.perf_counter() - started))
    return throughput, statistics.median(singles)


# --- the naive endpoints -----------------------------------------------------------------------------------


def naive_app(model: Path, runtime: str):
    """The endpoint a tutorial writes: load the model once, one forward pass per request in FastAPI's thread pool.

    ``torch`` is the tutorial's own (SageMaker's ``inference.py`` examples): the PyTorch model in eager fp32 on
    the artifact's transform. ``onnx`` is a stronger reference: kennel's ONNX Runtime predictor, still one photo
    per call.
    """
    import io

    import torch
    from fastapi import Depends, FastAPI, Request
    from PIL import Image

    from kennel.artifact import load_artifact
    from kennel.predictor import Predictor

    predictor = Predictor.load(model, runtime="onnx")
    if runtime == "torch":
        network = load_artifact(model).model.eval()

        def classify(image: Image.Image) -> torch.Tensor:
            with torch.no_grad():
                return network(predictor.transform(image.convert("RGB")).unsqueeze(0))

    else:

        def classify(image: Image.Image) -> torch.Tensor:
            return predictor.predict_batch(predictor.preprocess([image])).logits

    app = FastAPI()

    async def body(request: Request) -> bytes:
        return await request.body()

    body.__annotations__ = {"request": Request, "return": bytes}  # resolved here, not from module globals

    @app.get("/ping")
    def ping() -> dict:
        return {"status": "ok"}

    @app.post("/invocations")
    def invocations(data=Depends(body)):
        (prediction,) = predictor.decode(classify(Image.open(io.BytesIO(data))), top_k=5)
        return {"predictions": [{"label": n, "probability": p} for n, p in prediction.top]}

    return app


def run_naive_server(model: Path, runtime: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(model, runtime), host="127.0.0.1", port=port, log_level="warning")


# --- a user's inference.py ------------------------------------------------------------------------------------

# As a SageMaker user writes one for this project: torchvision's resnet18 with a new head, its weights saved as a
# state dict by the training script; photos in, the top five breeds out through the toolkit's default output_fn.
INFERENCE_PY = """
import io
import os

import torch
import torchvision.models as models
import torchvision.transforms as transforms
from PIL import Image

CLASSES = 133
TRANSFORM = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])


def model_fn(model_dir):
    model = models.resnet18(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, CLASSES)
    with open(os.path.join(model_dir, "model.pth"), "rb") as weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def input_fn(request_body, content_type):
    if content_type != "image/jpeg":
        raise ValueError(f"unsupported content type {content_type}")
    return Image.open(io.BytesIO(request_body)).convert("RGB")


def predict_fn(image, model):
    with torch.no_grad():
        probabilities = torch.softmax(model(TRANSFORM(image).unsqueeze(0)), dim=1)[0]
    top = probabilities.topk(5)
    return [{"breed": int(i), "probability": float(p)} for p, i in zip(top.values, top.indices)]
"""


def handler_model(folder: Path) -> Path:
    """A model folder with a randomly initialised resnet18's state dict and ``code/inference.py``."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 133)
    (folder / "code").mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pth")
    (folder / "code" / "inference.py").write_text(INFERENCE_PY)
    return folder


def measure_handlers_directly(folder: Path, bodies: list[bytes], seconds: float) -> tuple[float, float]:
    """Photos per second and the median latency in ms of the handlers called in this process, one photo after
    another, as the endpoint calls them (input_fn, predict_fn, the default output_fn) but without HTTP or
    queueing: whole passes over ``bodies`` for at least ``seconds``, so that every photo counts as often as under
    load. As in the endpoint, the module is imported and model_fn runs in this thread, and the requests run in
    another: on this busy 2-core machine the same forward pass took several times longer when PyTorch was driven
    from the thread that imported it, which would credit the endpoint with a speed-up that is no part of it."""
    from concurrent.futures import ThreadPoolExecutor

    from kennel.serve.handlers import Context, Handlers

    handlers, context = Handlers.of(folder / "code" / "inference.py"), Context(folder, folder.name)
    model = handlers.model_fn(str(folder), context=context)

    def passes() -> tuple[float, float]:
        for body in bodies[:10]:  # warm up, as the load generator's connections do
            handlers.transform(model, body, "image/jpeg", None, context)
        latencies: list[float] = []
        began = time.perf_counter()
        while not latencies or time.perf_counter() - began < seconds:
            for body in bodies:
                started = time.perf_counter()
                handlers.transform(model, body, "image/jpeg", None, context)
                latencies.append(1000 * (time.perf_counter() - started))
        return len(latencies) / (time.perf_counter() - began), statistics.median(latencies)

    with ThreadPoolExecutor(1, thread_name_prefix="handlers") as thread:
        return thread.submit(passes).result()


def print_handler_report(cells: list[Cell], direct_rps: float, direct_ms: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    by = {c.concurrency: c for c in cells if c.server == HANDLERS}
    console.print(f"inference.py handlers called directly: {direct_rps:.1f} photos/s, {direct_ms:.1f} ms (median)")
    table = Table(
        title="the user's handlers behind kennel serve / the same handlers called directly", title_justify="left"
    )
    for column in ("ratio", "value"):
        table.add_column(column, justify="left" if column == "ratio" else "right")
    for concurrency, cell in by.items():
        table.add_row(f"c={concurrency} requests/s / direct photos/s", f"{cell.rps / direct_rps:.2f}")
    if 1 in by:
        table.add_row("p50 c=1 / direct one-photo latency", f"{by[1].percentile(0.5) / direct_ms:.2f}")
    console.print(table)


# --- servers as subprocesses --------------------------------------------------------------------------------


def start(command: list[str], port: int, name: str, env: dict[str, str], timeout: float = 120) -> subprocess.Popen:
    """Start a server (``env`` added to this environment) and wait until ``GET /ping`` answers 200."""
    import requests

    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    stop_process(process)
    raise RuntimeError(f"{name} did not answer /ping within {timeout:.0f} s")


# --- the load generator -------------------------------------------------------------------------------------


async def _exchange(reader, writer, request: bytes) -> int:
    """Send one keep-alive request; read the response (Content-Length framed); return the status code."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return status


async def _load(
    port: int, bodies: list[bytes], concurrency: int, seconds: float, warmup: int, limit: int | None = None
) -> Cell:
    requests_ = [
        (
            f"POST /invocations?top_k=5 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = iter(range(10**9))
    issued = 0

    async def worker(deadline_holder: list[float]) -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(warmup):
                await _exchange(reader, writer, requests_[next(counter) % len(requests_)])
            ready.append(True)
            await start_gate.wait()
            while time.perf_counter() < deadline_holder[0] and (limit is None or issued < limit):
                issued += 1
                request = requests_[next(counter) % len(requests_)]
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                statuses[status] += 1
                if status == 200:
                    latencies.append(1000 * (time.perf_counter() - started))
        finally:
            writer.close()

    start_gate = asyncio.Event()
    ready: list[bool] = []
    deadline = [float("inf")]
    tasks = [asyncio.create_task(worker(deadline)) for _ in range(concurrency)]
    # Every connection finishes its warm-up before the clock starts.
    while len(ready) < concurrency and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    began = time.perf_counter()
    deadline[0] = began + seconds
    start_gate.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    return Cell("", concurrency, len(latencies), elapsed, latencies, statuses)


def load(
    port: int, bodies: list[bytes], concurrency: int, seconds: float, warmup: int = 2, limit: int | None = None
) -> Cell:
    """``concurrency`` connections sending ``bodies`` in turn for ``seconds``, or until ``limit`` requests."""
    return asyncio.run(_load(port, bodies, concurrency, seconds, warmup, limit))


# --- report -------------------------------------------------------------------------------------------------


def print_report(ceiling: dict[int, float], single_ms: float, cells: list[Cell], kennel_note: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    best = max(ceiling, key=ceiling.get)
    console.print("[bold]model alone[/bold] (Predictor on the files: decode, preprocess, forward, top-k)")
    table = Table()
    table.add_column("batch size", justify="right")
    table.add_column("photos/s", justify="right")
    for batch_size, rate in ceiling.items():
        table.add_row(str(batch_size), f"{rate:.1f}", style="bold" if batch_size == best else None)
    console.print(table)
    console.print(f"one photo: {single_ms:.1f} ms (median)")

    table = Table(title="endpoints (POST /invocations, JPEG bodies)", title_justify="left")
    for column in ("server", "concurrency", "requests/s", "p50 ms", "p99 ms", "requests", "errors"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for cell in cells:
        table.add_row(
            cell.server,
            str(cell.concurrency),
            f"{cell.rps:.1f}",
            f"{cell.percentile(0.5):.1f}",
            f"{cell.percentile(0.99):.1f}",
            str(cell.requests),
            str(cell.errors),
        )
    console.print(table)
    if kennel_note:
        console.print(kennel_note)
        return
    by = {(c.server, c.concurrency): c for c in cells}
    reference, onnx = by[(NAIVE_TORCH, 32)], by[(NAIVE_ONNX, 32)]
    ratios = []
    for server in dict.fromkeys(c.server for c in cells if not c.server.startswith("naive") and c.server != HANDLERS):
        kennel32, kennel1 = by[(server, 32)], by[(server, 1)]
        share, speedup = kennel32.rps / ceiling[best], kennel32.rps / reference.rps
        slowdown = kennel1.percentile(0.5) / single_ms
        ratios += [
            (f"{server} c=32 / model's best throughput", share, ">= 0.70", share >= 0.7),
            (f"{server} c=32 / {NAIVE_TORCH} c=32", speedup, ">= 2.0", speedup >= 2),
            (f"{server} c=32 / {NAIVE_ONNX} c=32", kennel32.rps / onnx.rps, "", None),  # shown, not a target
            (f"{server} p50 c=1 / one-photo latency", slowdown, "<= 1.5", slowdown <= 1.5),
        ]
    table = Table(title="targets", title_justify="left")
    for column in ("ratio", "value", "target", "met"):
        table.add_column(column, justify="left" if column == "ratio" else "right")
    for name, value, target, met in ratios:
        verdict = "" if met is None else "[green]yes[/green]" if met else "[red]no[/red]"
        table.add_row(name, f"{value:.2f}", target, verdict)
    console.print(table)


def kennel_serve_available() -> str | None:
    """None when ``kennel serve`` and ``kennel.serve.app`` are importable; else why not."""
    import importlib.util

    for module in ("kennel.serve.app", "kennel.cli.serve"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is missing"
        except ModuleNotFoundError:
            return f"{module} is missing"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--count", type=int, default=300, help="how many photos")
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per cell")
    parser.add_argument("--batch-sizes", default="1,8,16,32,64", help="batch sizes for the model-alone ceiling")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the ceiling measurement (best counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faces-always",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure kennel serve with a face search on every photo",
    )
    parser.add_argument(
        "--handlers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure kennel serve running a user's inference.py (a resnet18 state dict) at c=1 and c=32",
    )
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--handlers-direct", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--naive-runtime", choices=("torch", "onnx"), default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.naive_server:  # the naive endpoint runs in its own process, like kennel serve
        run_naive_server(Path(args.model), args.naive_runtime, args.naive_server)
        return
    if args.handlers_direct:  # so do the handlers called directly: no other runtime's threads beside them
        bodies = [p.read_bytes() for p in pick_photos(args.photos, args.count, args.seed)]
        print(json.dumps(measure_handlers_directly(args.handlers_direct, bodies, args.seconds)))
        return

    from kennel.cli.predict import resolve_model

    load_before = os.getloadavg()[0]
    model = resolve_model(args.model) if args.model else train_model(args.train_data)
    photos = pick_photos(args.photos, args.count, args.seed)
    if not photos:
        sys.exit(f"no JPEG photos under {args.photos}")
    bodies = [p.read_bytes() for p in photos]
    print(f"model {model}; {len(photos)} JPEGs from {args.photos}; {os.cpu_count()} CPUs", file=sys.stderr)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    ceiling, single_ms = measure_ceiling(model, photos, batch_sizes, args.repeats)

    naive = [sys.executable, __file__, "--model", str(model), "--naive-server", "{port}", "--naive-runtime"]
    servers = [(NAIVE_TORCH, [*naive, "torch"], {}), (NAIVE_ONNX, [*naive, "onnx"], {})]
    note = kennel_serve_available()
    direct = None
    if note is None:
        kennel = [sys.executable, "-m", "kennel", "serve", str(model), "--port", "{port}"]
        servers.append(("kennel serve", kennel, {}))
        if args.faces_always:
            servers.append(("kennel serve, faces always", [*kennel, "--faces", "always"], {}))
        if args.handlers:
            import tempfile

            folder = handler_model(Path(tempfile.mkdtemp(prefix="kennel-handlers-")) / "resnet18")
            entry = ["--entry-point", str(folder / "code" / "inference.py"), "--model-dir", str(folder)]
            servers.append((HANDLERS, [sys.executable, "-m", "kennel", "serve", *entry, "--port", "{port}"], {}))
    else:
        note = f"kennel serve not measured: {note} (the serving code has not landed yet)"
    cells = []
    for name, template, env in servers:
        if name == HANDLERS:  # just before its endpoint, so that both meet the machine in the same state
            print("calling the inference.py handlers directly, in a process of their own ...", file=sys.stderr)
            same = ["--photos", str(args.photos), "--count", str(args.count), "--seed", str(args.seed)]
            measure = [sys.executable, __file__, "--handlers-direct", str(folder), "--seconds", str(args.seconds)]
            done = subprocess.run([*measure, *same], check=True, capture_output=True, text=True)
            direct = tuple(json.loads(done.stdout.strip().splitlines()[-1]))
        port = free_port()
        print(f"starting {name} on port {port} ...", file=sys.stderr)
        process = start([part.replace("{port}", str(port)) for part in template], port, name, env)
        try:
            for concurrency in HANDLER_CONCURRENCY if name == HANDLERS else CONCURRENCY:
                cell = load(port, bodies, concurrency, args.seconds)
                cell.server = name
                cells.append(cell)
                print(f"  c={concurrency}: {cell.rps:.1f} req/s", file=sys.stderr)
        finally:
            stop_process(process)
    print_report(ceiling, single_ms, cells, note)
    if direct is not None:
        print_handler_report(cells, *direct)
    before, after = load_before, os.getloadavg()[0]
    print(f"load average (1 min): {before:.2f} before, {after:.2f} after, on {os.cpu_count()} CPUs", file=sys.stderr)
    if before > 0.5 * (os.cpu_count() or 1):
        print("warning: other work was running on this machine; the figures above are not reliable", file=sys.stderr)


if __name__ == "__main__":
    main()

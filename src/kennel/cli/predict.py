"""``kennel predict``: the top breeds of photos, from a model artifact (``--model``) or a running endpoint
(``--endpoint``); one photo, a random test photo (``--random-from``), or a whole folder into a CSV (``--out``,
SageMaker's batch transform)."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from kennel import serve_defaults
from kennel.cli.app import app
from kennel.cli.lookup import resolve_model
from kennel.cli.output import console, print_error, print_json, print_prediction, print_verdicts
from kennel.errors import PathError, UsageError

CHUNK = 64  # photos decoded and predicted at a time


def expand_photos(paths: list[Path]) -> list[Path]:
    """Files as given; folders become the image files under them (sorted, recursively). A path that does not
    exist fails here, before a model loads."""
    from kennel.data.layout import is_image_file

    photos: list[Path] = []
    for path in paths:
        if not path.exists():
            raise PathError(path, "no such file or folder")
        photos += sorted(p for p in path.rglob("*") if is_image_file(p)) if path.is_dir() else [path]
    return photos


def true_label(photo: Path) -> str | None:
    """The breed a dataset folder names (``.../042.Cavalier_king_charles_spaniel/x.jpg``), else None."""
    from kennel.data.layout import is_numbered, readable_name

    return readable_name(photo.parent.name) if is_numbered(photo.parent.name) else None


def random_photo(folder: Path, seed: int | None) -> Path:
    """A random photo under ``folder``; a dataset root (with ``test/``) means its test split."""
    if (folder / "test").is_dir():
        folder = folder / "test"
    if not folder.is_dir():
        raise PathError(folder, "no such folder (--random-from)")
    photos = expand_photos([folder])
    if not photos:
        raise UsageError(f"--random-from {folder}: no photos in it")
    return random.Random(seed).choice(photos)


def problem(file: Path, error: Exception) -> str:
    """What went wrong with one photo, without its path: the line or the CSV row names the photo already."""
    message = getattr(error, "message", None) or str(error)
    return message.removeprefix(f"{file}: ")


class _Local:
    """Answers from a model artifact, in the endpoint's shape (predictions only: no dog or face checks)."""

    def __init__(self, folder: Path, runtime: str, device: str, precision: str = "auto") -> None:
        from kennel.predictor import Predictor

        self.predictor = Predictor.load(folder, runtime=runtime, device=device, precision=precision)
        self.index = {name: i for i, name in enumerate(self.predictor.class_names)}

    def answers(self, files: list[Path], top_k: int) -> Iterator[dict[str, Any] | Exception]:
        from kennel.data.images import ImageError

        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            images: dict[int, object] = {}
            problems: dict[int, Exception] = {}
            for i, file in enumerate(chunk):
                try:
                    images[i] = self.predictor.load_image(file)
                except ImageError as exc:
                    problems[i] = exc
            predictions = self.predictor.predict(list(images.values()), top_k=top_k) if images else []
            by_position = dict(zip(images, predictions, strict=True))
            for i in range(len(chunk)):
                if i in problems:
                    yield problems[i]
                    continue
                top = by_position[i].top
                yield {"predictions": [{"label": n, "probability": p, "index": self.index[n]} for n, p in top]}


class _Remote:
    """Answers from a running endpoint."""

    def __init__(self, url: str, timeout: float, concurrency: int) -> None:
        from kennel.client import EndpointClient

        self.client = EndpointClient(url, timeout=timeout)
        self.concurrency = concurrency
        self.client.ping()  # fail early and clearly when nothing listens there

    def answers(self, files: list[Path], top_k: int) -> Iterator[dict[str, Any] | Exception]:
        return self.client.predict_many(files, top_k=top_k, concurrency=self.concurrency)


def _json_row(answer: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` shape: top-1 ``index``/``label``/``probability``, ``top``, and the endpoint's verdicts."""
    top = answer["predictions"]
    extra = {key: answer[key] for key in ("dog", "human_face", "latency_ms") if key in answer}
    return {
        "index": top[0]["index"],
        "label": top[0]["label"],
        "probability": top[0]["probability"],
        "top": [{"label": p["label"], "probability": p["probability"]} for p in top],
        **extra,
    }


CSV_COLUMNS = ["path", "label", "probability", "top_labels", "top_probabilities", "true_label", "correct", "error"]


def _csv_row(file: Path, answer: dict[str, Any] | Exception) -> dict[str, Any]:
    truth = true_label(file)
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(path=str(file), true_label=truth or "")
    if isinstance(answer, Exception):
        row["error"] = problem(file, answer)
        return row
    top = answer["predictions"]
    row.update(
        label=top[0]["label"],
        probability=f"{top[0]['probability']:.6f}",
        top_labels="|".join(p["label"] for p in top),
        top_probabilities="|".join(f"{p['probability']:.6f}" for p in top),
        correct="" if truth is None else str(int(top[0]["label"].casefold() == truth.casefold())),
    )
    return row


def batch_transform(backend, files: list[Path], top_k: int, out: Path, shown, errors) -> int:
    """Write one CSV row per photo to ``out`` with a progress bar on stderr; print a summary; count failures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = out.open("w", newline="")
    except OSError as exc:
        raise PathError.of(exc, "cannot write the CSV", out) from None
    rows: list[dict[str, Any]] = []
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with handle, Progress(*columns, console=errors) as progress:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        task = progress.add_task("predict", total=len(files))
        for file, answer in zip(files, backend.answers(files, top_k), strict=True):
            row = _csv_row(file, answer)
            writer.writerow(row)
            rows.append(row)
            if row["error"]:
                progress.console.print(f"[red]error:[/red] {file}: {row['error']}", highlight=False)
            progress.advance(task)
    failed = sum(1 for r in rows if r["error"])
    labelled = [r for r in rows if r["correct"] != ""]
    summary = f"{len(rows) - failed} of {len(rows)} photos predicted -> {out}"
    if labelled:
        right = sum(int(r["correct"]) for r in labelled)
        summary += f"; accuracy {right / len(labelled):.1%} ({right} of {len(labelled)} with a known label)"
    shown.print(summary, highlight=False)
    return failed


@app.command("predict")
def predict_command(
    photos: list[Path] = typer.Argument(None, help="photo files or folders of photos", show_default=False),
    model: str = typer.Option(None, "--model", "-m", help="model artifact folder, job folder, or job id/name"),
    endpoint: str = typer.Option(None, "--endpoint", "-e", help="URL of a running endpoint (kennel serve)"),
    random_from: Path = typer.Option(
        None, "--random-from", help="predict one random photo from this folder (a dataset's test split)"
    ),
    seed: int = typer.Option(None, "--seed", help="seed for --random-from"),
    out: Path = typer.Option(None, "--out", "-o", help="batch transform: write one CSV row per photo here"),
    top_k: int = typer.Option(serve_defaults.TOP_K, "--top-k", "-k", min=1, help="how many classes to show per photo"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="requests in flight with --endpoint"),
    timeout: float = typer.Option(30.0, "--timeout", help="seconds to wait for the endpoint per request"),
    runtime: str = typer.Option(
        "auto",
        "--runtime",
        "--engine",
        help="auto (the fastest measured here, see `kennel doctor`), a runtime (onnxruntime, torch) or a backend",
    ),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or int8 (with --model)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
) -> None:
    """Predict the top classes of photos with a trained model (--model) or a running endpoint (--endpoint).

    Exits 1 when a photo could not be predicted (the others are), 2 for options it cannot use."""
    if (model is None) == (endpoint is None):
        raise UsageError("give either --model DIR (predict here) or --endpoint URL (ask a running endpoint)")
    if random_from is not None and photos:
        raise UsageError("give photos or --random-from DIR, not both")
    folder = resolve_model(model) if model is not None else None  # a name that is no model fails before the photos
    files = [random_photo(random_from, seed)] if random_from is not None else expand_photos(photos or [])
    if not files:
        raise UsageError("no photos: give photo files or folders, or --random-from DIR")
    backend = _Remote(endpoint, timeout, concurrency) if folder is None else _Local(folder, runtime, device, precision)
    shown, errors = console(), console(stderr=True)
    if out is not None:
        if batch_transform(backend, files, top_k, out, shown, errors):
            raise typer.Exit(1)
        return
    results: list[dict[str, Any]] = []
    for file, answer in zip(files, backend.answers(files, top_k), strict=True):
        if isinstance(answer, Exception):
            message = problem(file, answer)
            print_error(f"{file}: {message}")
            results.append({"file": str(file), "error": message})
            continue
        truth = true_label(file) if random_from is not None else None
        results.append({"file": str(file), **_json_row(answer), **({"true_label": truth} if truth else {})})
        if as_json:
            continue
        print_prediction(shown, file, answer["predictions"])
        print_verdicts(shown, answer)
        if truth is not None:
            right = answer["predictions"][0]["label"].casefold() == truth.casefold()
            verdict = "[green]right[/green]" if right else "[red]wrong[/red]"
            shown.print(f"true breed: {truth} ({verdict})")
    if as_json:
        print_json(results)
    if any("error" in r for r in results):
        raise typer.Exit(1)

"""``kennel predict``: the top breeds of photos, from a model artifact (``--model``) or a running endpoint
(``--endpoint``); one photo, a random test photo (``--random-from``), or a whole folder into a CSV (``--out``,
SageMaker's batch transform)."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from kennel.cli import app

CHUNK = 64  # photos decoded and predicted at a time


def resolve_model(ref: str) -> Path:
    """An artifact folder, a job folder holding ``model/``, or a job reference (id, prefix, name, latest)."""
    from kennel.artifact import ArtifactError, is_artifact
    from kennel.jobs import JobNotFound, load_job

    path = Path(ref).expanduser()
    if is_artifact(path):
        return path
    if is_artifact(path / "model"):
        return path / "model"
    try:
        job = load_job(ref)
    except JobNotFound:
        if path.exists():
            raise ArtifactError(f"{path} is not a kennel model artifact: artifact.json is missing") from None
        raise ArtifactError(f"no model folder {path} and no job {ref!r} (kennel jobs lists them)") from None
    folder = Path(job.artifact) if job.artifact else job.path / "model"
    if not is_artifact(folder):
        raise ArtifactError(f"job {job.id} ({job.status}) has no model artifact at {folder}")
    return folder


def expand_photos(paths: list[Path]) -> list[Path]:
    """Files as given; folders become the image files under them (sorted, recursively)."""
    from kennel.data.layout import is_image_file

    photos: list[Path] = []
    for path in paths:
        photos += sorted(p for p in path.rglob("*") if is_image_file(p)) if path.is_dir() else [path]
    return photos


def _bar(probability: float, width: int = 30) -> str:
    filled = round(probability * width)
    return "█" * filled + "·" * (width - filled)


def _print_table(console, photo: Path, prediction) -> None:
    """A ranked table of one photo's top classes; ``prediction`` is a :class:`Prediction` or an endpoint answer."""
    from rich.table import Table

    top = prediction.top if hasattr(prediction, "top") else [(p["label"], p["probability"]) for p in prediction]
    table = Table(title=str(photo), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column("")
    for rank, (name, probability) in enumerate(top, 1):
        style = "bold green" if rank == 1 else None
        table.add_row(str(rank), name, f"{100 * probability:.1f}%", _bar(probability), style=style)
    console.print(table)


def _print_verdicts(console, answer: dict[str, Any]) -> None:
    """The endpoint's plain verdicts under the table: is it a dog, is there a human face."""
    dog, face = answer.get("dog"), answer.get("human_face")
    if dog:
        console.print(f"dog: {'yes' if dog['is_dog'] else 'no'} (score {dog['score']:.2f})")
    if face:
        if face.get("found"):
            console.print(
                f"human face found: {face.get('count', 1)} - the breeds above are the ones the face resembles"
            )
        elif face.get("searched") is False:
            console.print("human face: not looked for (the endpoint looks only where it sees no dog)")
        else:
            console.print("human face found: no")


def true_label(photo: Path) -> str | None:
    """The breed a dataset folder names (``.../042.Cavalier_king_charles_spaniel/x.jpg``), else None."""
    from kennel.data.layout import _NUMBERED, readable_name

    return readable_name(photo.parent.name) if _NUMBERED.match(photo.parent.name) else None


def random_photo(folder: Path, seed: int | None) -> Path:
    """A random photo under ``folder``; a dataset root (with ``test/``) means its test split."""
    if (folder / "test").is_dir():
        folder = folder / "test"
    if not folder.is_dir():
        raise ValueError(f"--random-from {folder}: no such folder")
    photos = expand_photos([folder])
    if not photos:
        raise ValueError(f"--random-from {folder}: no photos in it")
    return random.Random(seed).choice(photos)


class _Local:
    """Answers from a model artifact, in the endpoint's shape (predictions only: no dog or face checks)."""

    def __init__(self, model: str, runtime: str, device: str, precision: str = "auto") -> None:
        from kennel.predictor import Predictor

        self.predictor = Predictor.load(resolve_model(model), runtime=runtime, device=device, precision=precision)
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
        row["error"] = getattr(answer, "message", None) or str(answer)
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


def batch_transform(backend, files: list[Path], top_k: int, out: Path, console, errors) -> int:
    """Write one CSV row per photo to ``out`` with a progress bar on stderr; print a summary; count failures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with out.open("w", newline="") as handle, Progress(*columns, console=errors) as progress:
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
    console.print(summary, highlight=False)
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
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="how many classes to show per photo"),
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
    """Predict the top classes of photos with a trained model (--model) or a running endpoint (--endpoint)."""
    from rich.console import Console

    from kennel.artifact import ArtifactError
    from kennel.client import EndpointError

    console, errors = Console(), Console(stderr=True)

    def fail(message: str, code: int = 1):
        errors.print(f"[red]error:[/red] {message}", highlight=False)
        raise typer.Exit(code)

    if (model is None) == (endpoint is None):
        fail("give either --model DIR (predict here) or --endpoint URL (ask a running endpoint)", 2)
    if random_from is not None and photos:
        fail("give photos or --random-from DIR, not both", 2)
    try:
        files = [random_photo(random_from, seed)] if random_from is not None else expand_photos(photos or [])
    except ValueError as exc:
        fail(str(exc), 2)
    if not files:
        fail("no photos: give photo files or folders, or --random-from DIR", 2)
    try:
        backend = _Remote(endpoint, timeout, concurrency) if endpoint else _Local(model, runtime, device, precision)
    except (ArtifactError, EndpointError, ValueError) as exc:
        fail(str(exc))
    try:
        if out is not None:
            if batch_transform(backend, files, top_k, out, console, errors):
                raise typer.Exit(1)
            return
        results: list[dict[str, Any]] = []
        for file, answer in zip(files, backend.answers(files, top_k), strict=True):
            if isinstance(answer, Exception):
                message = getattr(answer, "message", None) or str(answer)
                errors.print(f"[red]error:[/red] {file}: {message}", highlight=False)
                results.append({"file": str(file), "error": message})
                continue
            truth = true_label(file) if random_from is not None else None
            results.append({"file": str(file), **_json_row(answer), **({"true_label": truth} if truth else {})})
            if as_json:
                continue
            _print_table(console, file, answer["predictions"])
            _print_verdicts(console, answer)
            if truth is not None:
                right = answer["predictions"][0]["label"].casefold() == truth.casefold()
                verdict = "[green]right[/green]" if right else "[red]wrong[/red]"
                console.print(f"true breed: {truth} ({verdict})")
    except EndpointError as exc:  # unreachable in the middle of a batch
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if any("error" in r for r in results):
        raise typer.Exit(1)

"""``kennel predict --model DIR PHOTO...``: the top breeds of photos, from a model artifact or a job's model."""

from __future__ import annotations

import json
from pathlib import Path

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
    from rich.table import Table

    table = Table(title=str(photo), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column("")
    for rank, (name, probability) in enumerate(prediction.top, 1):
        style = "bold green" if rank == 1 else None
        table.add_row(str(rank), name, f"{100 * probability:.1f}%", _bar(probability), style=style)
    console.print(table)


@app.command("predict")
def predict_command(
    photos: list[Path] = typer.Argument(..., help="photo files or folders of photos"),
    model: str = typer.Option(..., "--model", "-m", help="model artifact folder, job folder, or job id/name"),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="how many classes to show per photo"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime on CPU when available), onnx or torch"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
) -> None:
    """Predict the top classes of each photo with a trained model."""
    from rich.console import Console

    from kennel.artifact import ArtifactError
    from kennel.data.images import ImageError
    from kennel.predictor import Predictor

    console, errors = Console(), Console(stderr=True)
    try:
        predictor = Predictor.load(resolve_model(model), runtime=runtime, device=device)
    except (ArtifactError, ValueError) as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    files = expand_photos(photos)
    if not files:
        errors.print("[red]error:[/red] no photos found in the given folders", highlight=False)
        raise typer.Exit(1)
    results: list[dict] = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        images: dict[int, object] = {}
        problems: dict[int, str] = {}
        for i, file in enumerate(chunk):
            try:
                images[i] = predictor.load_image(file)
            except ImageError as exc:
                problems[i] = str(exc)
                errors.print(f"[red]error:[/red] {exc}", highlight=False)
        predictions = dict(zip(images, predictor.predict(list(images.values()), top_k=top_k), strict=True))
        for i, file in enumerate(chunk):
            if i in problems:
                results.append({"file": str(file), "error": problems[i]})
                continue
            results.append({"file": str(file), **predictions[i].to_dict()})
            if not as_json:
                _print_table(console, file, predictions[i])
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    if any("error" in r for r in results):
        raise typer.Exit(1)

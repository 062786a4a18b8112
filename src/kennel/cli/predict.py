"""``kennel predict``: the top breeds of photos, from a model artifact (``--model``) or a running endpoint
(``--endpoint``); one photo, a random test photo (``--random-from``), or a whole folder into a CSV (``--out``,
SageMaker's batch transform)."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


class FolderLabels:
    """The true class of a photo, from the name of its folder: ``.../042.Cavalier_king_charles_spaniel/x.jpg``.
    With the model's classes, only a folder that names one of them (numbered or not, in any case) gives a label,
    so photos of other breeds are not counted as wrong; without them (an endpoint that does not say), any
    dataset-style numbered folder does."""

    def __init__(self, classes: Iterable[str] | None) -> None:
        from kennel.data.layout import readable_name

        # A class and a folder match as readable names, in any case: `Toy poodle`, `003.Toy_poodle`, `toy_poodle`.
        self.classes = None if classes is None else {readable_name(name).casefold(): name for name in classes}

    def __call__(self, photo: Path) -> str | None:
        from kennel.data.layout import is_numbered, readable_name

        name = readable_name(photo.parent.name)
        if self.classes is None:
            return name if is_numbered(photo.parent.name) else None
        return self.classes.get(name.casefold())


@dataclass
class Tally:
    """What predicting many photos came to, said in one line: how many were predicted, and the accuracy over
    those whose folder names a class of the model."""

    photos: int = 0
    failed: int = 0
    labelled: int = 0
    right: int = 0

    def add(self, label: str | None, truth: str | None) -> None:
        """One photo: its top class (None: it could not be predicted) and its folder's class, if any."""
        self.photos += 1
        if label is None:
            self.failed += 1
        elif truth is not None:
            self.labelled += 1
            self.right += label.casefold() == truth.casefold()

    def line(self, out: Path | None = None) -> str:
        said = f"{self.photos - self.failed} of {self.photos} photos predicted" + (f" -> {out}" if out else "")
        if not self.labelled:
            return said
        said += f"; accuracy {self.right / self.labelled:.1%} ({self.right} of {self.labelled} in folders that name"
        skipped = self.photos - self.failed - self.labelled
        return said + (
            f" a class of the model; {skipped} skipped: their folders name none)" if skipped else " a class)"
        )


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
        self.classes: list[str] | None = list(self.predictor.class_names)

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

    def __init__(self, url: str, timeout: float, concurrency: int, token: str | None = None) -> None:
        from kennel.client import EndpointClient

        self.client = EndpointClient(url, timeout=timeout, token=token)
        self.concurrency = concurrency
        self.client.ping()  # fail early and clearly when nothing listens there
        self.classes: list[str] | None = self._classes()

    def _classes(self) -> list[str] | None:
        """The served model's classes, or None from an endpoint that does not say (one not made by kennel)."""
        from kennel.client import EndpointError

        try:
            return list(self.client.model_info()["class_names"])
        except EndpointError as exc:
            if exc.status == 401:  # every photo would be refused alike: say so once
                hint = "give it with --token or $KENNEL_TOKEN"
                raise UsageError(f"--endpoint {self.client.url}: {exc.message}; {hint}") from None
            return None
        except (KeyError, TypeError):
            return None

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


def _csv_row(file: Path, answer: dict[str, Any] | Exception, truth: str | None) -> dict[str, Any]:
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
    """Write one CSV row per photo to ``out`` with a progress bar on stderr; print a summary; count failures.
    A photo's ``true_label`` is the class of the model its folder names, if any: only those count as right or
    wrong."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = out.open("w", newline="")
    except OSError as exc:
        raise PathError.of(exc, "cannot write the CSV", out) from None
    labels, tally = FolderLabels(backend.classes), Tally()
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with handle, Progress(*columns, console=errors) as progress:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        task = progress.add_task("predict", total=len(files))
        for file, answer in zip(files, backend.answers(files, top_k), strict=True):
            row = _csv_row(file, answer, labels(file))
            writer.writerow(row)
            tally.add(row["label"] or None, row["true_label"] or None)
            if row["error"]:
                progress.console.print(f"[red]error:[/red] {file}: {row['error']}", highlight=False)
            progress.advance(task)
    shown.print(tally.line(out), highlight=False, soft_wrap=True)  # one line, for a script to read
    return tally.failed


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
    token: str = typer.Option(
        None, "--token", envvar="KENNEL_TOKEN", show_envvar=False, help="the endpoint's bearer token [$KENNEL_TOKEN]"
    ),
    runtime: str = typer.Option(
        "auto",
        "--runtime",
        "--engine",
        help="auto (the fastest measured here, see `kennel doctor`), a runtime (onnxruntime, torch) or a backend",
    ),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or int8 (with --model)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="one photo with --model: also write where the model looked (Grad-CAM) as a PNG, "
        "to --out or ./NAME-explained.png",
    ),
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
    if explain:
        if folder is None or len(files) != 1:
            raise UsageError("--explain takes one photo and --model (it runs the model's PyTorch weights)")
        from kennel.cli.explain_cli import explain_command_output

        explain_command_output(folder, files[0], out, top_k, device)
        return
    if folder is None:
        backend: _Remote | _Local = _Remote(endpoint, timeout, concurrency, token)
    else:
        backend = _Local(folder, runtime, device, precision)
    shown, errors = console(), console(stderr=True)
    if out is not None:
        if batch_transform(backend, files, top_k, out, shown, errors):
            raise typer.Exit(1)
        return
    results: list[dict[str, Any]] = []
    labels, tally = FolderLabels(backend.classes), Tally()
    for file, answer in zip(files, backend.answers(files, top_k), strict=True):
        if isinstance(answer, Exception):
            message = problem(file, answer)
            print_error(f"{file}: {message}")
            results.append({"file": str(file), "error": message})
            tally.add(None, None)
            continue
        truth = labels(file)
        tally.add(answer["predictions"][0]["label"], truth)
        random_truth = truth if random_from is not None else None  # one random photo: right? Many: the summary says
        results.append(
            {"file": str(file), **_json_row(answer), **({"true_label": random_truth} if random_truth else {})}
        )
        if as_json:
            continue
        print_prediction(shown, file, answer["predictions"])
        print_verdicts(shown, answer)
        if random_truth is not None:
            right = answer["predictions"][0]["label"].casefold() == random_truth.casefold()
            verdict = "[green]right[/green]" if right else "[red]wrong[/red]"
            shown.print(f"true breed: {random_truth} ({verdict})")
    if as_json:
        print_json(results)
    if len(files) > 1:  # a folder or several photos: what they came to (on stderr beneath JSON, kept parseable)
        (errors if as_json else shown).print(tally.line(), highlight=False, soft_wrap=True)
    if tally.failed:
        raise typer.Exit(1)

"""``kennel data``: fetch, check and generate datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from kennel.cli import app

data_app = typer.Typer(help="Fetch, check and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _parse_counts(text: str) -> tuple[int, int, int]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected three integers like 12,6,6, got {text!r}") from None
    if len(counts) != 3 or min(counts) < 0:
        raise typer.BadParameter(f"expected three counts >= 0 (train,valid,test), got {text!r}")
    return counts  # type: ignore[return-value]


@data_app.command("sample")
def sample_command(
    directory: Path = typer.Argument(..., help="folder to write the dataset into"),
    classes: int = typer.Option(3, "--classes", min=1, help="number of classes"),
    per_split: str = typer.Option("12,6,6", "--per-split", help="images per class in train,valid,test"),
    size: int = typer.Option(48, "--size", min=8, help="image side in pixels"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed writes the same files"),
) -> None:
    """Write a small synthetic dataset in dogImages layout: learnable in seconds, for smoke tests and demos."""
    from kennel.data.sample import write_sample_dataset

    root = write_sample_dataset(directory, classes, _parse_counts(per_split), size, seed)
    total = classes * sum(_parse_counts(per_split))
    typer.echo(f"wrote {total} images in {classes} classes to {root}")


@data_app.command("fetch")
def fetch_command(
    name: str = typer.Argument("dogimages", help="dataset to fetch (dogimages)"),
    from_file: Path = typer.Option(None, "--from", help="use this local zip instead of downloading"),
    dest: Path = typer.Option(None, "--dest", help="folder to unpack into (default: the kennel cache)"),
    url: str = typer.Option(None, "--url", help="download from this URL instead of the published one"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Download (resumable), verify and unpack a dataset; prints the folder to pass as --data."""
    from kennel.data.fetch import DATASETS, FetchError, default_dest, fetch_dataset, is_unpacked

    if name not in DATASETS:
        typer.echo(f"unknown dataset {name!r}; kennel can fetch: {', '.join(sorted(DATASETS))}", err=True)
        raise typer.Exit(2)
    target = (dest.expanduser() if dest else default_dest()) / DATASETS[name].folder
    if is_unpacked(target):
        typer.echo(f"{name} is already unpacked at {target}")
        return
    if from_file is None:
        typer.echo(f"downloading {name} ({DATASETS[name].size}) from {url or DATASETS[name].url}", err=True)
    try:
        root = fetch_dataset(name, dest, from_file, url, progress=not quiet)
    except FetchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{name} is ready at {root}\nuse it with: --data {root}")

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

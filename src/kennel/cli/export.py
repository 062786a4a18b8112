"""``kennel export``: a trained model in the form another platform loads (SageMaker, ONNX, MLflow), written to a
folder that appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, resolve_model
from kennel.export import EXPORT_FORMATS, export_format, export_model

FORMATS_HELP = "; ".join(f"{name}: {EXPORT_FORMATS.get(name).summary}" for name in EXPORT_FORMATS)


@app.command("export")
def export_command(
    job_or_model: str = typer.Argument(..., help=f"model artifact folder, job folder, or {JOB_HELP}"),
    fmt: str = typer.Option(..., "--format", "-f", metavar="FORMAT", help=FORMATS_HELP),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="the folder to write, new or empty"),
    force: bool = typer.Option(False, "--force", help="replace --out when it holds anything (its files go)"),
) -> None:
    """Export a trained model for another platform: SageMaker's PyTorch serving container, ONNX, or MLflow.

    Every format runs the model's ONNX file with ONNX Runtime, Pillow and NumPy, so the platform needs no kennel.
    """
    from rich.filesize import decimal

    export_format(fmt)  # an unknown format fails before the model is looked up
    folder = resolve_model(job_or_model)
    exported = export_model(folder, fmt, out, force=force)
    typer.echo(f"exported {folder} as {exported.format} to {exported.folder}")
    width = max(len(str(path)) for path in exported.files)
    for path in exported.files:
        typer.echo(f"  {path!s:<{width}}  {decimal((exported.folder / path).stat().st_size):>9}")
    typer.echo(exported.usage)

"""``kennel report JOB``: write a job's HTML report and print where it is."""

from __future__ import annotations

import typer

from kennel.cli import app


@app.command("report")
def report_command(
    job: str = typer.Argument(..., help="job id, id prefix, name, folder, or 'latest'"),
    open_browser: bool = typer.Option(False, "--open", help="open the report in the default browser"),
) -> None:
    """Write JOB's report.html (summary, curves, test metrics, per-class scores, confusions, mistakes)."""
    from kennel.jobs import JobNotFound, load_job
    from kennel.report import write_report

    try:
        record = load_job(job)
    except JobNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        path = write_report(record.path)
    except OSError as exc:
        typer.echo(f"error: cannot write the report of {record.id}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())

"""``kennel report JOB``: write a job's HTML report and print where it is."""

from __future__ import annotations

import typer

from kennel.cli import app


@app.command("report")
def report_command(
    job: str = typer.Argument(..., help="job id, id prefix, name, folder, 'latest', or a tuning study's name"),
    open_browser: bool = typer.Option(False, "--open", help="open the report in the default browser"),
) -> None:
    """Write JOB's report.html (summary, curves, test metrics, per-class scores, confusions, mistakes), or a
    tuning study's (trials, optimization history, parameter importances, parallel coordinates)."""
    from kennel.jobs import JobNotFound

    try:
        path = _write(job)
    except JobNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: cannot write the report of {job}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def _write(ref: str):
    """The report of the tuning study named ``ref`` when there is one, else of job ``ref``."""
    from kennel.jobs import load_job
    from kennel.report import write_report
    from kennel.tune.study import study_exists

    if study_exists(ref):
        from kennel.tune.report import write_study_report

        return write_study_report(ref)
    return write_report(load_job(ref).path)

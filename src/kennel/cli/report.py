"""``kennel report JOB``: write a job's HTML report and print where it is."""

from __future__ import annotations

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import print_warning
from kennel.errors import PathError
from kennel.jobs import JobDir


def _study_report(name: str, open_browser: bool) -> None:
    from kennel.tune.report import write_study_report

    try:
        path = write_study_report(name)
    except OSError as exc:
        raise PathError.of(exc, f"cannot write the report of study {name}") from None
    typer.echo(str(path))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command("report")
def report_command(
    job: str = typer.Argument(..., help=f"{JOB_HELP}; or a tuning study's name"),
    open_browser: bool = typer.Option(False, "--open", help="open the report in the default browser"),
) -> None:
    """Write JOB's report.html (summary, curves, the debugger's rules, test metrics, per-class scores, confusions,
    mistakes, and the profiler's summary) and, for a profiled job, its profile.html (the page report.html links to)."""
    from kennel.pages import write_report
    from kennel.tune.study import study_exists

    if study_exists(job):  # a tuning study's page: trials, history, importances, parallel coordinates
        _study_report(job, open_browser)
        return
    record = find_job(job)
    try:
        path = write_report(record.path)
    except OSError as exc:
        raise PathError.of(exc, f"cannot write the report of {record.id}", record.path) from None
    typer.echo(str(path))
    profile = _profile_report(record.path)
    if profile is not None:
        typer.echo(str(profile))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def _profile_report(job_dir):
    """Write profile.html when the job has profiler records; a problem only warns (report.html is written)."""
    if not JobDir(job_dir).profiler.is_dir():
        return None
    from kennel.profiler.report import write_profile_report

    try:
        return write_profile_report(job_dir)
    except (OSError, ValueError) as exc:
        print_warning(f"no profile.html for {job_dir.name}: {exc}")
        return None

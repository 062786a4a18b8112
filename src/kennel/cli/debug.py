"""``kennel debug JOB``: the debugger's rules summary of a job, and its report with plots."""

from __future__ import annotations

import json

import typer

from kennel.cli import app

STATUS_STYLE = {"issues found": "red", "no issues": "green", "error": "magenta", "not applicable": "dim"}


@app.command("debug")
def debug_command(
    job: str = typer.Argument(..., help="job id, id prefix, name, folder, or 'latest'"),
    html: bool = typer.Option(True, "--html/--no-html", help="write debug/report.html with the plots"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of a table"),
    open_browser: bool = typer.Option(False, "--open", help="open the report in the default browser"),
) -> None:
    """Print JOB's debugger rules (rule, status, first step, finding) and write its report: loss in TRAIN and
    EVAL, gradient norm per layer, weight update ratios and activation zero fractions over steps.

    Works while the job runs and after it was killed. `from kennel.debugger import load_records` reads the
    same records in Python."""
    from rich.console import Console
    from rich.table import Table

    from kennel.debugger.report import rules_summary, write_debug_report
    from kennel.debugger.store import FOLDER
    from kennel.jobs import JobNotFound, load_job

    try:
        record = load_job(job)
    except JobNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    folder = record.path / FOLDER
    if not folder.is_dir():
        typer.echo(f"error: job {record.id} has no debugger output (it ran with --debug off)", err=True)
        raise typer.Exit(1)
    rows, whys = rules_summary(folder)
    if as_json:
        typer.echo(json.dumps([{**row.to_dict(), "why": whys.get(row.rule, "")} for row in rows], indent=2))
    else:
        table = Table(title=f"debugger rules of {record.id}")
        for column, justify in (("rule", "left"), ("status", "left"), ("first step", "right"), ("finding", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for row in rows:
            style = STATUS_STYLE.get(row.status, "")
            finding = row.finding or whys.get(row.rule, "")
            step = "-" if row.step is None else f"{row.step} {row.mode or ''}".strip()
            table.add_row(row.rule, f"[{style}]{row.status}[/]", step, finding)
        Console(width=max(Console().width, 120)).print(table)
        for row in rows:
            if row.advice:
                typer.echo(f"{row.rule}: {row.advice}")
    if html:
        path = write_debug_report(record.path)
        typer.echo(str(path), err=as_json)
        if open_browser:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())

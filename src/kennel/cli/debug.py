"""``kennel debug JOB``: the debugger's rules summary of a job, and its report with plots."""

from __future__ import annotations

import json

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import RULE_STATUS_STYLE, styled
from kennel.errors import Failure


@app.command("debug")
def debug_command(
    job: str = typer.Argument(..., help=JOB_HELP),
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

    record = find_job(job)
    folder = record.folder.debug
    if not folder.is_dir():
        raise Failure(f"job {record.id} has no debugger output (it ran with --debug off)")
    rows, whys = rules_summary(folder)
    if as_json:
        typer.echo(json.dumps([{**row.to_dict(), "why": whys.get(row.rule, "")} for row in rows], indent=2))
    else:
        table = Table(title=f"debugger rules of {record.id}")
        for column, justify in (("rule", "left"), ("status", "left"), ("first step", "right"), ("finding", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for row in rows:
            finding = row.finding or whys.get(row.rule, "")
            step = "-" if row.step is None else f"{row.step} {row.mode or ''}".strip()
            table.add_row(row.rule, styled(row.status, RULE_STATUS_STYLE.get(row.status)), step, finding)
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

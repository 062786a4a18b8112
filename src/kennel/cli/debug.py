"""``kennel debug JOB``: the debugger's rules summary of a job, and its report with plots."""

from __future__ import annotations

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import RULE_STATUS_STYLE, ListingFormat, format_option, listing_format, print_listing
from kennel.errors import Failure


def rules_listing(job_id: str, rows, whys: dict[str, str]):
    """One row per debugger rule: its status, the step and mode of its first issue, and the finding (or why it
    could not judge). The advice is printed under the table, and is a column of its own in TSV."""
    from kennel.cli.tables import Column, Listing

    columns = [
        Column("rule", rank=0, breaks=""),
        Column("status", rank=0, style=RULE_STATUS_STYLE.get),
        # The key is the heading: TSV readers and people see the same name for the step a rule first fired at.
        Column("first step", rank=1, justify="right"),
        Column("mode", rank=2),
        Column("finding", rank=0),
        Column("advice", in_table=False),
    ]
    listed = [
        {
            "rule": row.rule,
            "status": row.status,
            "first step": row.step,
            "mode": row.mode,
            "finding": row.finding or whys.get(row.rule, ""),
            "advice": row.advice,
        }
        for row in rows
    ]
    return Listing(f"debugger rules of {job_id}", columns, listed)


@app.command("debug")
def debug_command(
    job: str = typer.Argument(..., help=JOB_HELP),
    html: bool = typer.Option(True, "--html/--no-html", help="write debug/report.html with the plots"),
    as_json: bool = typer.Option(
        False, "--json", help="print the summary as JSON instead of a table (the same as --format json)"
    ),
    fmt: ListingFormat | None = format_option(),
    open_browser: bool = typer.Option(False, "--open", help="open the report in the default browser"),
) -> None:
    """Print JOB's debugger rules (rule, status, first step, finding) and write its report: loss in TRAIN and
    EVAL, gradient norm per layer, weight update ratios and activation zero fractions over steps.

    Works while the job runs and after it was killed. `from kennel.debugger import load_records` reads the
    same records in Python. As TSV or JSON, the report's path goes to stderr."""
    from kennel.debugger.report import rules_summary, write_debug_report

    fmt = listing_format(fmt, as_json)
    record = find_job(job)
    folder = record.folder.debug
    if not folder.is_dir():
        raise Failure(
            f"job {record.id} has no debugger output (it ran with --debug off, or ended before its training loop)"
        )
    rows, whys = rules_summary(folder)
    summary = [{**row.to_dict(), "why": whys.get(row.rule, "")} for row in rows]
    print_listing(rules_listing(record.id, rows, whys), fmt, as_json=summary)
    if fmt == "table":
        for row in rows:
            if row.advice:
                typer.echo(f"{row.rule}: {row.advice}")
    if html:
        path = write_debug_report(record.path)
        typer.echo(str(path), err=fmt != "table")
        if open_browser:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())

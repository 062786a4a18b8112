"""``kennel profile JOB``: where a job's time went and what to change; writes profile.html."""

from __future__ import annotations

import sys

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import RULE_STATUS_STYLE, ListingFormat, console, format_option, listing_format
from kennel.errors import Failure, PathError

STATISTICS = ("max", "p99", "p95", "p50", "min")


def _setup_lines(summary) -> list[str]:
    """The job, the machine it ran on and when, as two lines of rich markup."""
    from kennel.jobs import local_minutes
    from kennel.report.section import duration

    job, context = summary.job, summary.context
    workers = context.get("loader_workers")
    setup = f"{context.get('device', '?')}, {context.get('cores', '?')} cores"
    setup += f", {len(context.get('gpus') or [])} GPU(s)" if context.get("device") == "cuda" else ""
    setup += f", {workers} loader workers" if workers is not None else ""
    setup += f", batch {context['batch_size']}" if context.get("batch_size") else ""
    ranks = int(context.get("world_size") or 1)
    setup += f" per process x {ranks} processes (torchrun)" if ranks > 1 else ""
    return [
        f"[bold]{job.get('id', '?')}[/] {job.get('status', '')} on {setup}",
        f"started {local_minutes(summary.started) or '-'}, ended "
        f"{local_minutes(summary.ended) or 'not recorded'}, total {duration(summary.total_s)}",
    ]


def _evidence(finding) -> str:
    """What a rule said (its message and advice), else the numbers it judged by."""
    from kennel.profiler.summary import format_numbers

    if finding is None:
        return ""
    said = " ".join(t for t in (finding.message, finding.advice) if t)
    return said or format_numbers(finding.numbers)


def summary_listings(summary) -> list:
    """The profile's four tables: the job's phases, system usage, the training loop's breakdown and the rules.
    Tables round their numbers; TSV keeps them whole."""
    from kennel.cli.tables import Column, Listing
    from kennel.report.section import num, pct

    seconds = Column("seconds", rank=0, show=num, justify="right")
    share = Column("share", rank=1, show=pct, justify="right")
    phases = Listing(
        "Job summary",
        [Column("phase", "job phase", rank=0), seconds, share],
        [{"phase": name, "seconds": s, "share": part} for name, s, part in summary.phases],
    )
    usage = Listing(
        "System usage",
        [
            Column("metric", rank=0),
            Column("unit", rank=0, breaks=""),
            *(Column(k, rank=1 if k in ("max", "p50") else 2, show=num, justify="right") for k in STATISTICS),
        ],
        [{"metric": label, "unit": unit, **{k: stats[k] for k in STATISTICS}} for label, unit, stats in summary.usage],
    )
    per_step = {"rank": 2, "show": lambda ms: num(ms, 3), "justify": "right"}
    loop = Listing(
        "Framework breakdown",
        [
            Column("phase", "training loop", rank=0),
            seconds,
            share,
            Column("p50_ms", "p50 ms/step", **per_step),
            Column("p95_ms", "p95 ms/step", **per_step),
        ],
        [
            {"phase": name, "seconds": s, "share": part, "p50_ms": p50, "p95_ms": p95}
            for name, s, part, p50, p95 in summary.breakdown
        ],
    )
    rules = Listing(
        "Rules",
        [
            Column("rule", rank=0, breaks=""),
            Column("status", rank=0, style=RULE_STATUS_STYLE.get),
            Column("step", rank=1, justify="right"),
            Column("evidence", "evidence / advice", rank=0),
        ],
        [
            {
                "rule": row.name,
                "status": row.status,
                "step": row.finding.step if row.finding else None,
                "evidence": _evidence(row.finding),
            }
            for row in summary.rules
        ],
    )
    return [phases, usage, loop, rules]


def _print_summary(summary, fmt: str) -> None:
    """The setup lines, then each table: fitted to the terminal, or as TSV, a section per table (its title on
    a line, the header row, the rows) after a blank line."""
    from kennel.cli.tables import print_table, write_tsv

    listings = summary_listings(summary)
    if fmt == "table":
        out = console()
        for line in _setup_lines(summary):
            out.print(line)
        for listing in listings:
            print_table(listing, out)
        return
    from rich.text import Text

    for line in _setup_lines(summary):
        typer.echo(Text.from_markup(line).plain)
    for listing in listings:
        typer.echo(f"\n{listing.title}")
        write_tsv(listing, sys.stdout)


@app.command("profile")
def profile_command(
    job: str = typer.Argument(..., help=JOB_HELP),
    open_browser: bool = typer.Option(False, "--open", help="open profile.html in the default browser"),
    as_json: bool = typer.Option(
        False, "--json", help="print the rules' findings as JSON lines instead of tables (the same as --format json)"
    ),
    fmt: ListingFormat | None = format_option(),
) -> None:
    """Where JOB's time went and what to change: the job's phases, system usage, the training loop's time by
    phase, the profiler rules with their advice. Writes JOB's profile.html and prints its path last.

    Piped, each table is a TSV section under a line with its title. As TSV or JSON, the page's path goes to
    stderr."""
    import json

    from kennel.profiler.report import ProfileData, write_profile_report

    fmt = listing_format(fmt, as_json)
    record = find_job(job)
    data = ProfileData.load(record.path)
    if data.profile.empty:
        raise Failure(
            f"job {record.id} has no profiler records in {record.path / 'profiler'} "
            "(it ran with profiler.enabled false, or before kennel had a profiler)"
        )
    try:
        path = write_profile_report(record.path, data)
    except OSError as exc:
        raise PathError.of(exc, f"cannot write the profiler report of {record.id}", record.path) from None
    if fmt == "json":
        for row in data.summary.rules:
            if row.finding is not None:
                typer.echo(json.dumps(row.finding.to_dict()))
    else:
        _print_summary(data.summary, fmt)
    typer.echo(str(path), err=fmt != "table")  # as kennel debug: piped output stays the tables alone
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())

"""``kennel profile JOB``: where a job's time went and what to change; writes profile.html."""

from __future__ import annotations

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import RULE_STATUS_STYLE, styled
from kennel.errors import Failure, PathError


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    from kennel.jobs import local_minutes
    from kennel.profiler.summary import format_numbers
    from kennel.report.section import duration, num, pct

    console = Console(soft_wrap=False)
    job, context = summary.job, summary.context
    workers = context.get("loader_workers")
    setup = f"{context.get('device', '?')}, {context.get('cores', '?')} cores"
    setup += f", {len(context.get('gpus') or [])} GPU(s)" if context.get("device") == "cuda" else ""
    setup += f", {workers} loader workers" if workers is not None else ""
    setup += f", batch {context['batch_size']}" if context.get("batch_size") else ""
    ranks = int(context.get("world_size") or 1)
    setup += f" per process x {ranks} processes (torchrun)" if ranks > 1 else ""
    console.print(f"[bold]{job.get('id', '?')}[/] {job.get('status', '')} on {setup}")
    console.print(
        f"started {local_minutes(summary.started) or '-'}, ended "
        f"{local_minutes(summary.ended) or 'not recorded'}, total {duration(summary.total_s)}"
    )

    phases = Table("job phase", "seconds", "share", title="Job summary", title_justify="left")
    for name, seconds, share in summary.phases:
        phases.add_row(name, num(seconds), pct(share))
    usage = Table("metric", "unit", "max", "p99", "p95", "p50", "min", title="System usage", title_justify="left")
    for label, unit, st in summary.usage:
        usage.add_row(label, unit, *(num(st[k]) for k in ("max", "p99", "p95", "p50", "min")))
    loop = Table(
        "training loop",
        "seconds",
        "share",
        "p50 ms/step",
        "p95 ms/step",
        title="Framework breakdown",
        title_justify="left",
    )
    for name, seconds, share, p50, p95 in summary.breakdown:
        loop.add_row(name, num(seconds), pct(share), num(p50, 3), num(p95, 3))
    rules = Table("rule", "status", "step", "evidence / advice", title="Rules", title_justify="left")
    for row in summary.rules:
        finding = row.finding
        said = " ".join(t for t in (finding.message, finding.advice) if t) if finding else ""
        text = (said or format_numbers(finding.numbers)) if finding else ""
        step = str(finding.step) if finding and finding.step is not None else "-"
        rules.add_row(row.name, styled(row.status, RULE_STATUS_STYLE.get(row.status)), step, text)
    for table in (phases, usage, loop, rules):
        console.print(table)


@app.command("profile")
def profile_command(
    job: str = typer.Argument(..., help=JOB_HELP),
    open_browser: bool = typer.Option(False, "--open", help="open profile.html in the default browser"),
    as_json: bool = typer.Option(False, "--json", help="print the rules' findings as JSON lines instead of tables"),
) -> None:
    """Where JOB's time went and what to change: the job's phases, system usage, the training loop's time by
    phase, the profiler rules with their advice. Writes JOB's profile.html and prints its path last."""
    import json

    from kennel.profiler.report import ProfileData, write_profile_report

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
    if as_json:
        for row in data.summary.rules:
            if row.finding is not None:
                typer.echo(json.dumps(row.finding.to_dict()))
    else:
        _print_summary(data.summary)
    typer.echo(str(path))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())

"""``kennel monitor JOB_OR_MODEL --capture DIR``: has the endpoint's traffic drifted from the job's valid photos?
Prints the monitor rules' findings and writes monitor.html with the plots (see :mod:`kennel.monitor`)."""

from __future__ import annotations

from pathlib import Path

import typer

from kennel.cli.app import app
from kennel.cli.lookup import JOB_HELP, find_job, resolve_model
from kennel.cli.output import (
    RULE_STATUS_STYLE,
    ListingFormat,
    console,
    format_option,
    listing_format,
    print_listing,
    print_warning,
)
from kennel.errors import Failure, PathError, UsageError


def _locate(ref: str):
    """The model folder ``ref`` names and the job it belongs to: a model folder (inside a job's folder or not:
    then no job), else a job as ``kennel jobs show`` finds it and the job's model."""
    from kennel.artifact import is_artifact
    from kennel.jobs import JobDir

    path = Path(ref).expanduser()
    if is_artifact(path):
        owner = JobDir(path.parent)
        return path, find_job(str(owner.path)) if owner.has_record() else None
    job = find_job(ref)
    return resolve_model(str(job.path)), job


def _recorded_valid(job) -> Path:
    """The valid split folder the job's config names: data.valid, else data.root's valid/."""
    from kennel.config import DataConfig

    settings = (job.config or {}).get("data") or {}
    # Only the folders: the rest of a recorded config may be of another kennel version.
    folders = DataConfig.model_validate({key: settings.get(key) or None for key in ("root", "valid")})
    try:
        return folders.split_dir("valid")
    except ValueError:  # neither is recorded
        raise UsageError(f"job {job.id} records no dataset; pass --data DIR, the dataset it was validated on") from None


def _valid_split(job, data: Path | None, folder: Path):
    """The split the traffic is compared with: ``--data``'s valid split (or ``--data`` itself, a split folder),
    else the job's own."""
    from kennel.data.layout import LayoutError, load_layout

    if data is not None:
        valid = data / "valid" if (data / "valid").is_dir() else data
    elif job is not None:
        valid = _recorded_valid(job)
    else:
        raise UsageError(f"{folder} is a model outside a job: pass --data DIR, the dataset it was validated on")
    try:
        return load_layout(None, splits=("valid",), dirs={"valid": valid})["valid"]
    except LayoutError as exc:
        raise UsageError(f"{exc}; pass --data DIR if the dataset has moved") from None


def findings_listing(run):
    """One row per monitor rule: its status, PSI and p-value, what it saw and what to do."""
    from kennel.cli.tables import Column, Listing
    from kennel.monitor.report import finding_rows
    from kennel.report.section import num

    columns = [
        Column("rule", rank=0, breaks=""),
        Column("status", rank=0, style=RULE_STATUS_STYLE.get),
        Column("psi", "PSI", rank=1, show=lambda v: num(v, 3), justify="right"),
        Column("p_value", "p", rank=2, show=lambda v: num(v, 2), justify="right"),
        Column("valid", rank=1, justify="right", breaks=""),
        Column("traffic", rank=1, justify="right", breaks=""),
        Column("finding", "finding / advice", rank=0),
        Column("message", in_table=False),
        Column("advice", in_table=False),
    ]
    rows = [
        {
            "rule": row["name"],
            "status": row["status"],
            "psi": row["psi"],
            "p_value": row["p"],
            "valid": row["valid"],
            "traffic": row["traffic"],
            "finding": " ".join(t for t in (row["message"], row["advice"] and f"Advice: {row['advice']}.") if t),
            "message": row["message"],
            "advice": row["advice"],
        }
        for row in finding_rows(run)
    ]
    return Listing("monitor rules", columns, rows)


def _lines(run) -> list[str]:
    """What was compared, in two lines, and the verdict."""
    from kennel.monitor import REFERENCE_FILE
    from kennel.monitor.report import verdict

    reference, traffic = run.reference, run.traffic
    whose = f"job {run.job['id']}" if run.job else str(run.artifact)
    how = f"read back from {REFERENCE_FILE}" if reference.cached else f"computed in {reference.seconds:.1f} s"
    unreadable = f", {len(reference.unreadable)} unreadable left out" if reference.unreadable else ""
    span = traffic.span()
    return [
        f"reference: {len(reference.sample)} valid photos of {whose} ({how}{unreadable})",
        f"traffic: {len(run.comparison.traffic)} lines from {traffic.files} capture file(s)"
        + (f", {span}" if span else ""),
        verdict(run)["text"],
    ]


def _warnings(run) -> None:
    traffic = run.traffic
    named = "; ".join(traffic.other_models[:3])
    if traffic.foreign:
        print_warning(f"no line in {traffic.folder} is of this model (they name {named}); compared all the same")
    elif traffic.other:
        print_warning(f"{traffic.other} capture line(s) of another model left out ({named})")


@app.command("monitor")
def monitor_command(
    model: str = typer.Argument(..., help=f"{JOB_HELP}; or a model folder"),
    capture: Path = typer.Option(..., "--capture", help="the folder `kennel serve --capture DIR` writes to"),
    out: Path = typer.Option(
        None, "--out", "-o", help="the page to write (default: monitor.html in the job's folder, else here)"
    ),
    data: Path = typer.Option(
        None, "--data", help="dataset to compare with: a folder with valid/, or a split folder (default: the job's)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print the findings as JSON instead of a table (the same as --format json)"
    ),
    fmt: ListingFormat | None = format_option(),
    open_browser: bool = typer.Option(False, "--open", help="open the page in the default browser"),
) -> None:
    """Compare the traffic an endpoint captured (kennel serve --capture DIR) with the job's valid photos: the
    class mix, the confidence, the share of "no dog" answers, brightness and image size, each a population
    stability index checked by a permutation test. Prints the rules' findings, with advice, and writes monitor.html
    with the distributions; its path comes last (on stderr as TSV or JSON).

    The first run passes the model over the valid split, with a progress bar; later runs read that back.

    Exits 0 whether or not drift is found."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kennel.monitor import MONITOR_PAGE, REFERENCE_FILE, run_monitor, write_monitor_page
    from kennel.serve.capture import capture_files

    fmt = listing_format(fmt, as_json)
    folder, job = _locate(model)
    split = _valid_split(job, data, folder)
    capture = capture.expanduser()
    if not capture.is_dir():
        raise PathError(capture, "no such capture folder")
    if not capture_files(capture):
        raise Failure(
            f"{capture} holds no capture files (capture-*.jsonl): serve with kennel serve MODEL --capture {capture}"
        )
    page = out if out is not None else (job.path if job is not None else Path.cwd()) / MONITOR_PAGE
    cache = (job.path if job is not None else page.parent) / REFERENCE_FILE

    errors = Console(stderr=True)
    columns = (TextColumn("reference: the model on the valid photos"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=errors, transient=True, disable=not errors.is_terminal
    ) as bar:
        task = bar.add_task("reference", total=len(split))
        run = run_monitor(
            folder,
            split,
            capture,
            cache,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            job=job.to_dict() if job is not None else None,
        )
    _warnings(run)
    try:
        path = write_monitor_page(run, page)
    except OSError as exc:
        raise PathError.of(exc, "cannot write the monitor page", page) from None

    listing = findings_listing(run)
    if fmt == "table":
        shown = console()
        for line in _lines(run):
            shown.print(line, highlight=False, soft_wrap=True)
    print_listing(listing, fmt, as_json=[f.to_dict() for f in run.findings] if fmt == "json" else None)
    typer.echo(str(path), err=fmt != "table")
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())

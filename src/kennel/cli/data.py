"""``kennel data``: fetch, check and generate datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kennel.cli.app import app
from kennel.cli.output import ListingFormat, format_option, listing_format
from kennel.errors import PathError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from kennel.data.check import CheckReport, Finding

data_app = typer.Typer(help="Fetch, check and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _parse_counts(text: str) -> tuple[int, int, int]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected three integers like 12,6,6, got {text!r}") from None
    if len(counts) != 3 or min(counts) < 0:
        raise typer.BadParameter(f"expected three counts >= 0 (train,valid,test), got {text!r}")
    return counts  # type: ignore[return-value]


@data_app.command("sample")
def sample_command(
    directory: Path = typer.Argument(..., help="folder to write the dataset into"),
    classes: int = typer.Option(3, "--classes", min=1, help="number of classes"),
    per_split: str = typer.Option("12,6,6", "--per-split", help="images per class in train,valid,test"),
    size: int = typer.Option(48, "--size", min=8, help="image side in pixels"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed writes the same files"),
) -> None:
    """Write a small synthetic dataset in dogImages layout: learnable in seconds, for smoke tests and demos."""
    from kennel.data.sample import write_sample_dataset

    try:
        root = write_sample_dataset(directory, classes, _parse_counts(per_split), size, seed)
    except OSError as exc:
        raise PathError.of(exc, "cannot write the dataset", directory) from None
    total = classes * sum(_parse_counts(per_split))
    typer.echo(f"wrote {total} images in {classes} classes to {root}")


@data_app.command("fetch")
def fetch_command(
    name: str = typer.Argument("dogimages", help="dataset to fetch (dogimages)"),
    from_file: Path = typer.Option(None, "--from", help="use this local zip instead of downloading"),
    dest: Path = typer.Option(None, "--dest", help="folder to unpack into (default: the kennel cache)"),
    url: str = typer.Option(None, "--url", help="download from this URL instead of the published one"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Download (resumable), verify and unpack a dataset; prints the folder to pass as --data."""
    from kennel.data.fetch import DATASETS, default_dest, fetch_dataset, is_unpacked

    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; kennel can fetch: {', '.join(sorted(DATASETS))}")
    target = (dest.expanduser() if dest else default_dest()) / DATASETS[name].folder
    if is_unpacked(target):
        typer.echo(f"{name} is already unpacked at {target}")
        return
    if from_file is None:
        size = "" if url else f" ({DATASETS[name].size})"
        typer.echo(f"downloading {name}{size} from {url or DATASETS[name].url}", err=True)
    root = fetch_dataset(name, dest, from_file, url, progress=not quiet)
    typer.echo(f"{name} is ready at {root}\nuse it with: --data {root}")


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SHOWN_PER_CODE = 5
SHOWN_FILES = 4


def _classes_listing(report: CheckReport):
    """The class table: each class's photos per split, and the totals under them in a table."""
    from kennel.cli.tables import Column, Listing
    from kennel.data.layout import readable_name

    splits = list(report.counts)
    columns = [
        Column("number", "#", rank=2, justify="right"),
        Column("class", rank=0, breaks=""),  # a breed's name stays on one line
        Column("folder", in_table=False),
        *[Column(split, rank=1, justify="right") for split in splits],
    ]
    rows = [
        {"number": i, "class": readable_name(c), "folder": c, **{s: report.counts[s].get(c) for s in splits}}
        for i, c in enumerate(report.classes, 1)
    ]
    title = f"{report.root}: {len(report.classes)} classes, {report.files_checked} images"
    return Listing(title, columns, rows, footer={"class": "total", **report.split_totals()})


def _print_report(report: CheckReport, fmt: str) -> None:
    """Class table, then findings by severity, a few per code (the JSON has them all), then the verdict. As TSV,
    the class table is TSV and the findings follow it as the same lines."""
    from kennel.cli.output import console, print_listing
    from kennel.data.check import SEVERITIES

    out = console()
    if report.classes:
        print_listing(_classes_listing(report), fmt)
    for severity in SEVERITIES:
        findings = report.by_severity(severity)
        if findings:
            style = SEVERITY_STYLE[severity]
            out.print(f"\n[{style}]{severity.upper()}S ({len(findings)})[/{style}]", highlight=False)
            by_code: dict[str, list[Finding]] = {}
            for finding in findings:
                by_code.setdefault(finding.code, []).append(finding)
            for code, group in by_code.items():
                _print_findings(out, code, group, style)
    verdict = "[bold red]FAILED[/bold red]" if report.errors else "[bold green]OK[/bold green]"
    out.print(
        f"\n{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s) "
        f"in {report.files_checked} images, {report.seconds:.1f} s",
        highlight=False,
    )


def _print_findings(console: Console, code: str, group: list[Finding], style: str) -> None:
    for finding in group[:SHOWN_PER_CODE]:
        console.print(f"  [{style}]{code}[/{style}] {finding.message}", highlight=False)
        for path in finding.files[:SHOWN_FILES]:
            console.print(f"      {path}", highlight=False, soft_wrap=True)
        if len(finding.files) > SHOWN_FILES:
            console.print(f"      … and {len(finding.files) - SHOWN_FILES} more", highlight=False)
    if len(group) > SHOWN_PER_CODE:
        more = len(group) - SHOWN_PER_CODE
        console.print(f"  [{style}]{code}[/{style}]: {more} more like these (see --json)", highlight=False)


@data_app.command("check")
def check_command(
    directory: Path = typer.Argument(..., help="dataset folder holding train/ valid/ test/"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON document instead of the report (--format json)"),
    fmt: ListingFormat | None = format_option(),
    tiny_px: int = typer.Option(64, "--tiny-px", min=1, help="warn about images whose short side is below this"),
    imbalance: float = typer.Option(10.0, "--imbalance", min=1.0, help="warn when largest/smallest class exceeds"),
    workers: int = typer.Option(0, "--workers", min=0, help="decoding processes (0: one per core)"),
) -> None:
    """Validate a dataset: layout, unreadable or odd images, duplicates and leakage, class balance.

    Exits 1 when there are errors; warnings alone exit 0. Piped, the class table is TSV, then the findings follow.
    """
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kennel.data.check import check_dataset

    fmt = listing_format(fmt, as_json)
    if fmt == "json":  # the whole report, findings and all
        report = check_dataset(directory, tiny_px, imbalance, workers or None)
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        columns = (TextColumn("checking images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("check", total=None)
            report = check_dataset(
                directory,
                tiny_px,
                imbalance,
                workers or None,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
        _print_report(report, fmt)
    if report.errors:
        raise typer.Exit(1)

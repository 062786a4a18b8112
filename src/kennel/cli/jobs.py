"""``kennel jobs``: the training jobs console. It reads job folders only (no mlflow, no torch), so it is instant."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from kennel.cli import app
from kennel.jobs import STATUSES, JobNotFound, JobRecord, engine_lines, list_jobs, load_job

jobs_app = typer.Typer(
    help="The jobs console: status, duration, hyperparameters and accuracy of every training job.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(jobs_app, name="jobs")

STUDY = typer.Option(None, "--study", help="only the trials of this tuning study")
STATUS = typer.Option(None, "--status", help=f"only jobs with this status: {', '.join(STATUSES)}")
LIMIT = typer.Option(30, "--limit", "-n", help="show at most this many, newest first (0: all)")
AS_JSON = typer.Option(False, "--json", help="print JSON records instead of a table")

STATUS_STYLE = {
    "created": "dim",
    "running": "cyan",
    "completed": "green",
    "stopped": "yellow",
    "pruned": "magenta",
    "failed": "red",
}
PARAM_COLUMNS = {"lr": "lr", "batch_size": "batch", "epochs": "epochs", "freeze": "freeze"}
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "valid_top5",
    "lr",
    "images_per_s",
    "epoch_seconds",
)
FILES = (
    "config.yaml",
    "metrics.jsonl",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
    "evaluation",
    "report.html",
    "profile.html",
)


# --- formatting -----------------------------------------------------------------------------------------


def _parse_time(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def _when(stamp: str | None) -> str:
    moment = _parse_time(stamp)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def _duration(record: JobRecord) -> str:
    seconds = record.duration_s
    started = _parse_time(record.started)
    if record.status == "running" and started is not None:
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(record: JobRecord) -> str:
    """The status, coloured; a "running" job whose process is gone (killed, machine rebooted) says so."""
    pid = getattr(record, "pid", None)
    if record.status == "running" and isinstance(pid, int) and not _alive(pid):
        return "[red]running?[/red] [dim]process gone[/dim]"
    style = STATUS_STYLE.get(record.status, "")
    return f"[{style}]{record.status}[/{style}]" if style else record.status


def _best_valid(record: JobRecord) -> Any:
    return record.metrics.get("best_valid_accuracy", record.metrics.get("valid_accuracy"))


# --- the table and the panel ----------------------------------------------------------------------------


def jobs_table(records: list[JobRecord], caption: str = ""):
    """The console's list: one row per job, like SageMaker's training jobs page."""
    from rich.table import Table

    params = [key for key in PARAM_COLUMNS if any(key in r.params for r in records)]
    studies = any(r.study for r in records)
    names = any(r.name not in r.id for r in records)  # an id already contains its job's name, when short
    table = Table(title="kennel training jobs", caption=caption, caption_justify="left")
    table.add_column("job", no_wrap=True)
    if names:
        table.add_column("name", overflow="fold")
    if studies:
        table.add_column("study", overflow="fold")
    for column in ("status", "started", "duration", "backbone"):
        table.add_column(column, no_wrap=True)
    for key in params:
        table.add_column(PARAM_COLUMNS[key], justify="right")
    table.add_column("best valid", justify="right")
    table.add_column("test acc", justify="right")
    for r in records:
        row = [r.id, *([r.name] if names else []), *([r.study or "-"] if studies else [])]
        row += [_status(r), _when(r.started or r.created), _duration(r), r.backbone or "-"]
        row += [_value(r.params.get(key)) for key in params]
        row += [_percent(_best_valid(r)), _percent(r.metrics.get("test_accuracy"))]
        table.add_row(*row)
    return table


def _grid(pairs: list[tuple[str, Any]], columns: int = 1):
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    for _ in range(columns):
        grid.add_column(style="bold")
        grid.add_column()
    pairs = [(k, v if isinstance(v, str) else _value(v)) for k, v in pairs]
    for start in range(0, len(pairs), columns):
        chunk = pairs[start : start + columns]
        grid.add_row(*[cell for pair in chunk for cell in pair])
    return grid


def read_epochs(path: Path) -> list[dict[str, Any]]:
    """The ``"kind": "epoch"`` lines of a ``metrics.jsonl``; a line cut short by a kill is skipped."""
    if not path.is_file():
        return []
    epochs = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("kind") == "epoch":
            epochs.append(entry)
    return epochs


def _epochs_table(epochs: list[dict[str, Any]]):
    from rich.table import Table

    columns = [c for c in EPOCH_COLUMNS if any(c in e for e in epochs)]
    table = Table(title="epochs", title_justify="left")
    for column in columns:
        table.add_column(column, justify="right")
    for entry in epochs:
        table.add_row(*[_value(entry.get(c)) for c in columns])
    return table


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            pairs += _flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def job_panel(record: JobRecord):
    """One job on a page: the record, its hyperparameters, metrics, epochs, configuration and files."""
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.rule import Rule

    head = [
        ("id", record.id),
        ("status", _status(record)),
        ("kind", record.kind),
        ("study", record.study),
        ("backbone", record.backbone),
        ("created", _when(record.created)),
        ("started", _when(record.started)),
        ("ended", _when(record.ended)),
        ("duration", _duration(record)),
        ("stop reason", record.stop_reason),
        ("pid", getattr(record, "pid", None)),
        ("mlflow run", record.mlflow_run_id),
    ]
    parts: list[Any] = [_grid([(k, v) for k, v in head if v is not None])]
    if record.error:
        parts += [Rule("error", style="red"), f"[red]{record.error}[/red]"]
    if record.params:
        parts += [Rule("hyperparameters"), _grid(list(record.params.items()), columns=3)]
    if record.metrics:
        metrics = [(k, _percent(v) if "accuracy" in k or "top5" in k else v) for k, v in record.metrics.items()]
        parts += [Rule("metrics"), _grid(metrics, columns=3)]
    if record.engine:
        parts += [Rule("inference engine"), _grid([(use, escape(line)) for use, line in engine_lines(record.engine)])]
    epochs = read_epochs(record.path / "metrics.jsonl")
    if epochs:
        parts += [Rule(), _epochs_table(epochs)]
    if record.config:
        parts += [Rule("configuration"), _grid(_flatten(record.config), columns=2)]
    files = [("folder", str(record.path))]
    if record.artifact:
        files.append(("model", record.artifact))
    files += [(name, str(record.path / name)) for name in FILES if (record.path / name).exists()]
    parts += [Rule("files"), _grid(files)]
    return Panel(Group(*parts), title=f"[bold]{record.name}[/bold]", title_align="left", expand=False)


# --- commands -------------------------------------------------------------------------------------------


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _console():
    from rich.console import Console

    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _select(study: str | None, status: str | None) -> list[JobRecord]:
    if status is not None and status not in STATUSES:
        raise _fail(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    records = list_jobs(study=study)
    return [r for r in records if status is None or r.status == status]


def _list(study: str | None, status: str | None, limit: int, as_json: bool) -> None:
    from kennel.home import jobs_dir

    records = _select(study, status)
    shown = records[:limit] if limit > 0 else records
    if as_json:
        _print_json([r.to_dict() for r in shown])
        return
    if not records:
        where = jobs_dir()
        typer.echo(f"no jobs under {where} yet" + ("" if study or status else "; 'kennel train --data DIR' runs one"))
        return
    caption = f"{len(shown)} of {len(records)} jobs" + (" (--limit 0 shows all)" if len(shown) < len(records) else "")
    _console().print(jobs_table(shown, caption=f"{caption} · {jobs_dir()}"))


@jobs_app.callback()
def jobs_callback(
    ctx: typer.Context,
    study: str | None = STUDY,
    status: str | None = STATUS,
    limit: int = LIMIT,
    as_json: bool = AS_JSON,
) -> None:
    """List training jobs, newest first (the same as 'kennel jobs ls')."""
    if ctx.invoked_subcommand is None:
        _list(study, status, limit, as_json)


@jobs_app.command("ls")
def jobs_ls(
    study: str | None = STUDY,
    status: str | None = STATUS,
    limit: int = LIMIT,
    as_json: bool = AS_JSON,
) -> None:
    """List training jobs, newest first: status, start, duration, backbone, hyperparameters, accuracy."""
    _list(study, status, limit, as_json)


def _load(ref: str) -> JobRecord:
    """A job as ``load_job`` finds it, else the one job whose id or name contains ``ref`` (e.g. 'effnet')."""
    try:
        return load_job(ref)
    except JobNotFound as error:
        matches = [r for r in list_jobs() if ref in r.id or ref in r.name]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise _fail(f"job {ref!r} is ambiguous: {', '.join(r.id for r in matches[:5])}") from None
        raise _fail(str(error)) from None
    except (OSError, ValueError) as error:
        raise _fail(f"cannot read job {ref!r}: {error}") from None


@jobs_app.command("show")
def jobs_show(
    job: str = typer.Argument(..., help="job id, unique id prefix, name, folder, 'latest', or a unique part of an id"),
    as_json: bool = AS_JSON,
) -> None:
    """Everything about one job: record, hyperparameters, metrics, the epochs table and its files."""
    record = _load(job)
    if as_json:
        _print_json(record.to_dict())
        return
    _console().print(job_panel(record))


@jobs_app.command("best")
def jobs_best(
    study: str = typer.Argument(..., help="the tuning study"),
    metric: str = typer.Option(None, "--metric", help="rank jobs by this record metric instead of the objective"),
    minimize: bool = typer.Option(False, "--minimize", help="with --metric: lower is better (e.g. a loss)"),
    as_json: bool = AS_JSON,
) -> None:
    """The best of a tuning study: its hyperparameters, job and metrics, written as a config to retrain.

    With --metric, or for jobs tagged with a study outside `kennel tune`: the best job by that record metric."""
    from kennel.tune.study import study_exists

    if metric is None and study_exists(study):
        from kennel.cli.tune import show_best

        show_best(study, as_json)
        return
    metric = metric or "best_valid_accuracy"
    scored = [r for r in list_jobs(study=study) if isinstance(r.metrics.get(metric), (int, float))]
    if not scored:
        raise _fail(f"no job of study {study!r} has metric {metric!r} (kennel jobs --study {study} lists them)")
    best = (min if minimize else max)(scored, key=lambda r: r.metrics[metric])
    if as_json:
        _print_json(best.to_dict())
        return
    _console().print(job_panel(best))

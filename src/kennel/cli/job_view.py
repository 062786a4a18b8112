"""How ``kennel jobs`` shows jobs: the list as a table, one job as a panel (record, hyperparameters, metrics,
epochs, configuration, files). Reads job folders only; rich loads when a table is drawn."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kennel.cli.output import styled
from kennel.jobs import JobRecord, engine_lines
from kennel.processes import process_alive

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


def _status(record: JobRecord) -> str:
    """The status, coloured; a "running" job whose process is gone (killed, machine rebooted) says so."""
    pid = getattr(record, "pid", None)
    if record.status == "running" and isinstance(pid, int) and not process_alive(pid):
        return "[red]running?[/red] [dim]process gone[/dim]"
    return styled(record.status, STATUS_STYLE.get(record.status))


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
    epochs = record.folder.read_metrics("epoch")
    if epochs:
        parts += [Rule(), _epochs_table(epochs)]
    if record.config:
        parts += [Rule("configuration"), _grid(_flatten(record.config), columns=2)]
    files = [("folder", str(record.path))]
    if record.artifact:
        files.append(("model", record.artifact))
    files += [(path.name, str(path)) for path in record.folder.outputs()]
    parts += [Rule("files"), _grid(files)]
    return Panel(Group(*parts), title=f"[bold]{record.name}[/bold]", title_align="left", expand=False)

"""How ``kennel jobs`` shows jobs: the list as a table, one job as a panel (record, hyperparameters, metrics,
epochs, configuration, files). Reads job folders only; rich loads when a table is drawn."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kennel.cli.output import styled
from kennel.jobs import JobRecord, engine_lines, local_minutes
from kennel.processes import process_alive

STATUS_STYLE = {
    "created": "dim",
    "running": "cyan",
    "completed": "green",
    "stopped": "yellow",
    "pruned": "magenta",
    "failed": "red",
}
GONE = "running? process gone"
# The hyperparameters every list shows, by record key, with their heading and rank (see kennel.cli.tables).
PARAM_COLUMNS = {"lr": ("lr", 3), "batch_size": ("batch", 5), "epochs": ("epochs", 5), "freeze": ("freeze", 5)}
PARAM_ALIASES = {"lr": ("learning_rate", "learning-rate")}  # how scripts (kennel run) name them too
SCRIPT_METRICS = 3  # the most metrics of users' scripts a list shows, in the order the jobs logged them
# The epochs table of one job, by metrics key: heading (it wraps at its spaces) and rank (kennel.cli.tables).
EPOCH_COLUMNS = {
    "epoch": ("epoch", 0),
    "train_loss": ("train loss", 2),
    "train_accuracy": ("train acc", 3),
    "valid_loss": ("valid loss", 2),
    "valid_accuracy": ("valid acc", 1),
    "valid_top5": ("valid top-5", 4),
    "lr": ("lr", 3),
    "images_per_s": ("photos/s", 5),
    "epoch_seconds": ("seconds", 5),
}
PANEL_FRAME = 4  # a panel's border and padding, left and right


# --- formatting -----------------------------------------------------------------------------------------


def _parse_time(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def _when(stamp: str | None) -> str:
    return local_minutes(stamp) or "-"


def _seconds(record: JobRecord) -> float | None:
    """How long the job ran, or has run so far while it runs."""
    started = _parse_time(record.started)
    if record.status == "running" and started is not None:
        return (datetime.now(timezone.utc) - started).total_seconds()
    return record.duration_s


def _duration(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    seconds = int(value)
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


def _status_text(record: JobRecord) -> str:
    """The status; a "running" job whose process is gone (killed, machine rebooted) says so."""
    pid = getattr(record, "pid", None)
    if record.status == "running" and isinstance(pid, int) and not process_alive(pid):
        return GONE
    return record.status


def status_style(status: Any) -> str | None:
    """The colour of a job's or a study's status (:data:`STATUS_STYLE`); red for a process gone."""
    return "red" if status == GONE else STATUS_STYLE.get(status)


def _status(record: JobRecord) -> str:
    """The status in rich markup, coloured."""
    text = _status_text(record)
    return "[red]running?[/red] [dim]process gone[/dim]" if text == GONE else styled(text, status_style(text))


def _best_valid(record: JobRecord) -> Any:
    return record.metrics.get("best_valid_accuracy", record.metrics.get("valid_accuracy"))


# --- the table and the panel ----------------------------------------------------------------------------


def _script_metrics(record: JobRecord) -> list[str]:
    """The metrics a script's job was told to read from its lines (``--metric NAME=REGEX``), in that order."""
    defined = record.config.get("metrics") or []
    return [m["name"] for m in defined if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _varying(records: list[JobRecord]) -> list[str]:
    """The hyperparameters, beyond :data:`PARAM_COLUMNS`, whose values differ between the jobs: what a study's
    trials tried, so that the trials can be told apart."""
    shown = {name for key in PARAM_COLUMNS for name in (key, key.replace("_", "-"), *PARAM_ALIASES.get(key, ()))}
    keys = dict.fromkeys(key for r in records for key in r.params if key not in shown)
    return [key for key in keys if len({repr(r.params.get(key)) for r in records}) > 1]


def _param(record: JobRecord, key: str) -> Any:
    """A hyperparameter the console has a column for; a user's script may spell it with a dash (``batch-size``)
    or as SageMaker examples do (``learning_rate`` for ``lr``)."""
    for name in (key, key.replace("_", "-"), *PARAM_ALIASES.get(key, ())):
        if name in record.params:
            return record.params[name]
    return None


def jobs_listing(records: list[JobRecord], caption: str = "", notice: str = "", study: str | None = None):
    """The console's list, like SageMaker's training jobs page: one row per job. Listing one ``study``, its
    own column goes (every row would say the same) and the hyperparameters its trials tried come in."""
    from kennel.cli.tables import Column, Listing

    params = [key for key in PARAM_COLUMNS if any(_param(r, key) is not None for r in records)]
    tried = _varying(records) if study else []
    # What users' scripts logged (the metrics kennel run read from their lines, by the names they were given),
    # which kennel's accuracy columns cannot show.
    logged = list(dict.fromkeys(name for r in records if r.kind == "script" for name in _script_metrics(r)))
    logged = logged[:SCRIPT_METRICS]
    rows = [
        {
            "id": r.id,
            "name": r.name,
            "study": r.study,
            "status": _status_text(r),
            "started": r.started or r.created,
            "duration_s": _seconds(r),
            "backbone": r.backbone,
            **{key: _param(r, key) for key in params},
            **{key: r.params.get(key) for key in tried},
            **{f"metrics.{key}": r.metrics.get(key) for key in logged},
            "best_valid_accuracy": _best_valid(r),
            "test_accuracy": r.metrics.get("test_accuracy"),
        }
        for r in records
    ]

    def some(key: str) -> bool:  # a column no listed job has a value for stays out of the table (not of TSV)
        return any(row[key] is not None for row in rows)

    names = any(r.name not in r.id for r in records)  # an id already holds its job's name, when short
    columns = [
        Column("id", "job", rank=0, breaks=""),
        Column("name", rank=8, breaks="", in_table=names),
        Column("study", rank=7, breaks="", in_table=study is None and some("study")),
        Column("status", rank=0, style=status_style),
        Column("started", rank=4, show=_when),
        Column("duration_s", "duration", rank=4, show=_duration, justify="right"),
        Column("backbone", rank=2, breaks="+", in_table=some("backbone")),  # a fused one folds after each +
        *[Column(key, *PARAM_COLUMNS[key], show=_value, justify="right") for key in params],
        *[Column(key, rank=3, show=_value, justify="right", breaks="") for key in tried],
        *[Column(f"metrics.{key}", key, rank=2, show=_value, justify="right", breaks="") for key in logged],
        Column(
            "best_valid_accuracy",
            "best valid",
            rank=1,
            show=_percent,
            justify="right",
            in_table=some("best_valid_accuracy"),
        ),
        Column("test_accuracy", "test acc", rank=1, show=_percent, justify="right", in_table=some("test_accuracy")),
    ]
    title = f"kennel training jobs of study {study}" if study else "kennel training jobs"
    see_all = "a wider terminal or --format tsv shows them; kennel jobs show ID shows one job"
    return Listing(title, columns, rows, caption=caption, notice=notice, see_all=see_all)


def _grid(pairs: list[tuple[str, Any]], columns: int = 1, width: int | None = None):
    """``pairs`` as ``key value`` cells, up to ``columns`` pairs a row: fewer where ``width`` cells cannot hold that
    many of the widest pair, so that a key is never cut; a value too long for its cell folds onto more lines."""
    from rich.table import Table

    pairs = [(k, v if isinstance(v, str) else _value(v)) for k, v in pairs]
    if width is not None and pairs:
        widest = max(len(k) + len(v) for k, v in pairs) + 4  # rich's 2-cell padding after a key and after a value
        columns = max(1, min(columns, width // widest))
    grid = Table.grid(padding=(0, 2))
    for _ in range(columns):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
    for start in range(0, len(pairs), columns):
        chunk = pairs[start : start + columns]
        grid.add_row(*[cell for pair in chunk for cell in pair])
    return grid


def _epochs_table(epochs: list[dict[str, Any]], width: int):
    from kennel.cli.tables import Column, Listing, fitted_group

    keys = [key for key in EPOCH_COLUMNS if any(key in e for e in epochs)]
    columns = [Column(key, *EPOCH_COLUMNS[key], show=_value, justify="right", breaks="") for key in keys]
    see_all = "a wider terminal shows them; metrics.jsonl, under files, holds every number"
    return fitted_group(Listing("epochs", columns, epochs, see_all=see_all), width)


def _flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            pairs += _flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def job_panel(record: JobRecord, width: int):
    """One job on a page ``width`` cells wide: the record, its hyperparameters, metrics, epochs, configuration
    and files."""
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
        ("duration", _duration(_seconds(record))),
        ("stop reason", record.stop_reason),
        ("pid", getattr(record, "pid", None)),
        ("mlflow run", record.mlflow_run_id),
    ]
    parts: list[Any] = [_grid([(k, v) for k, v in head if v is not None])]
    if record.error:
        parts += [Rule("error", style="red"), f"[red]{record.error}[/red]"]
    if record.params:
        parts += [Rule("hyperparameters"), _grid(list(record.params.items()), 3, width - PANEL_FRAME)]
    if record.metrics:
        metrics = [(k, _percent(v) if "accuracy" in k or "top5" in k else v) for k, v in record.metrics.items()]
        parts += [Rule("metrics"), _grid(metrics, 3, width - PANEL_FRAME)]
    if record.engine:
        parts += [Rule("inference engine"), _grid([(use, escape(line)) for use, line in engine_lines(record.engine)])]
    epochs = record.folder.read_metrics("epoch")
    if epochs:
        parts += [Rule(), _epochs_table(epochs, width - PANEL_FRAME)]
    if record.config:
        parts += [Rule("configuration"), _grid(_flatten(record.config), 2, width - PANEL_FRAME)]
    files = [("folder", str(record.path))]
    if record.artifact:
        files.append(("model", record.artifact))
    files += [(path.name, str(path)) for path in record.folder.outputs()]
    parts += [Rule("files"), _grid(files)]
    return Panel(Group(*parts), title=f"[bold]{record.name}[/bold]", title_align="left", expand=False)

"""The debugger's files in a job folder, and the Python API that reads them back.

    debug/records-001.arrow   reductions per tensor per saved step: an Arrow IPC stream, one record batch per
                              few saved steps, readable while the job appends to it; a resumed job starts the next
                              segment (records-002.arrow), and readers keep the newer rows of any step run twice
    debug/losses-001.arrow    the loss of every step of each mode (the rules judge them all, and a chart should
                              show what they judged, not only the saved steps), in segments like the records
    debug/findings.jsonl      one finding per line (kennel.findings)
    debug/rules.json          each rule's status, rewritten atomically after every epoch and at the end
    debug/report.html         `kennel debug JOB`

A killed job keeps every record batch and finding written before the kill: a reader stops at a torn last batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kennel.atomic import atomic_write_json
from kennel.debugger.window import COLUMNS, Save
from kennel.findings import Finding, load_findings
from kennel.jobs.folder import JobDir

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

FOLDER = JobDir.DEBUG
FINDINGS = "findings.jsonl"
RULES = "rules.json"
REPORT = "report.html"


def _schema() -> pa.Schema:
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            ("mode", text),
            ("step", pa.int64()),
            ("mode_step", pa.int64()),
            ("epoch", pa.int32()),
            ("lr", pa.float64()),
            ("collection", text),
            ("tensor", text),
            ("layer", text),
            *[(name, pa.float32()) for name in COLUMNS],
        ]
    )


def _loss_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("mode", pa.dictionary(pa.int32(), pa.string())),
            ("step", pa.int64()),  # as in the records: EVAL's is the last training step before its validation
            ("mode_step", pa.int64()),
            ("epoch", pa.int32()),
            ("loss", pa.float64()),
        ]
    )


class _Segment:
    """A new segment ``<prefix>-NNN.arrow`` of ``folder``, opened on its first write: a resumed job appends to a
    new one, never to the stream a kill may have torn."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema) -> None:
        self.folder, self.prefix, self.schema = folder, prefix, schema
        self.path: Path | None = None
        self._sink = self._writer = None

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            taken = (int(p.stem.split("-")[1]) for p in self.folder.glob(f"{self.prefix}-*.arrow"))
            self.path = self.folder / f"{self.prefix}-{1 + max(taken, default=0):03d}.arrow"
            self._sink = pa.OSFile(str(self.path), "wb")  # unbuffered: each batch reaches the file as it is written
            self._writer = ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


class RecordWriter:
    """Appends the saved steps, and every step's loss, to new segments of ``folder``, one record batch per
    ``flush_seconds`` at most: building a batch costs more than a short step, so they wait in memory that long
    (and until :meth:`flush`, which the debugger calls at every epoch's end)."""

    def __init__(self, folder: Path, flush_seconds: float = 2.0) -> None:
        self.folder = Path(folder)
        self.flush_seconds = flush_seconds
        self._records: _Segment | None = None
        self._losses: _Segment | None = None
        self._pending: list[Save] = []
        self._pending_losses: list[tuple[str, int, int, int, float]] = []
        self._flushed = time.monotonic()

    @property
    def path(self) -> Path | None:
        """The records segment this writer appends to (None before its first saved step)."""
        return self._records.path if self._records is not None else None

    def write(self, save: Save) -> None:
        self._pending.append(save)
        self._flush_when_due()

    def write_loss(self, mode: str, step: int, mode_step: int, epoch: int, loss: float) -> None:
        """One step's loss: ``step`` the global training step, ``mode_step`` the step within ``mode``."""
        self._pending_losses.append((mode, step, mode_step, epoch, loss))
        self._flush_when_due()

    def _flush_when_due(self) -> None:
        if time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        self._flushed = time.monotonic()
        if self._pending:
            if self._records is None:
                self._records = _Segment(self.folder, "records", _schema())
            schema = self._records.schema
            batches = [pa.record_batch(self._columns(save), schema=schema) for save in self._pending]
            self._records.write(pa.Table.from_batches(batches).combine_chunks().unify_dictionaries())
            self._pending = []
        if self._pending_losses:
            if self._losses is None:
                self._losses = _Segment(self.folder, "losses", _loss_schema())
            modes, steps, mode_steps, epochs, losses = zip(*self._pending_losses, strict=True)
            columns = [pa.array(modes).dictionary_encode(), steps, mode_steps, epochs, losses]
            self._losses.write(pa.Table.from_arrays(columns, schema=self._losses.schema))
            self._pending_losses = []

    def _columns(self, save: Save) -> list:
        import pyarrow as pa

        n = len(save.names)
        return [
            pa.array([save.mode] * n).dictionary_encode(),
            pa.array(np.full(n, save.step, dtype=np.int64)),
            pa.array(np.full(n, save.mode_step, dtype=np.int64)),
            pa.array(np.full(n, save.epoch, dtype=np.int32)),
            pa.array(np.full(n, save.lr, dtype=np.float64)),
            pa.array(save.collections).dictionary_encode(),
            pa.array(save.names).dictionary_encode(),
            pa.array(save.layers).dictionary_encode(),
            *[pa.array(save.values[:, i].astype(np.float32)) for i in range(len(COLUMNS))],
        ]

    def close(self) -> None:
        self.flush()
        for segment in (self._records, self._losses):
            if segment is not None:
                segment.close()


def _read_segment(path: Path) -> list[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    batches = []
    try:
        with pa.OSFile(str(path), "rb") as source:
            for batch in ipc.open_stream(source):
                batches.append(batch)
    except (OSError, pa.ArrowInvalid) as exc:  # a torn last batch of a killed job, or an empty new segment
        log.info("%s: read %d record batches, then stopped (%s)", path, len(batches), exc)
    return batches


def read_table(folder: Path, prefix: str = "records") -> pa.Table:
    """Every segment's rows of the records (or, with ``prefix="losses"``, of the per-step losses); where a
    resumed job ran steps again, the later segment's rows win."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _loss_schema() if prefix == "losses" else _schema()
    tables = []
    for path in sorted(Path(folder).glob(f"{prefix}-*.arrow")):
        batches = _read_segment(path)
        if not batches:
            continue
        table = pa.Table.from_batches(batches).unify_dictionaries()
        restart = pc.min(table["step"]).as_py()
        tables = [t.filter(pc.less(t["step"], restart)) for t in tables]
        tables.append(table)
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables]).unify_dictionaries()


@dataclass
class DebugRecords:
    """A job's debugger records. ``frame`` has one row per tensor per saved step: ``mode``, ``step`` (global
    training step), ``mode_step``, ``epoch``, ``lr``, ``collection``, ``tensor``, ``layer`` and one column per
    reduction (:data:`~kennel.debugger.window.COLUMNS`). ``losses`` has the loss of every step: ``mode``,
    ``step``, ``mode_step``, ``epoch``, ``loss`` (empty for a job from before kennel kept them)."""

    folder: Path
    frame: pd.DataFrame
    findings: list[Finding]
    rules: dict[str, Any]
    losses: pd.DataFrame | None = None

    @property
    def every_step_losses(self) -> bool:
        """Whether the job kept every step's loss, not only the saved steps'."""
        return self.losses is not None and not self.losses.empty

    def loss_curve(self, mode: str = "TRAIN") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, losses)`` of ``mode`` over training steps: every TRAIN step's loss, and the mean loss of each
        validation pass at the training step it followed; only the saved steps' when the job kept no others."""
        if self.every_step_losses:
            frame, column = self.losses[self.losses["mode"] == mode], "loss"
        else:
            frame, column = self._where(mode=mode, collection="losses", tensor="loss"), "mean"
        curve = frame.groupby("step")[column].mean()
        return curve.index.to_numpy(dtype=np.int64), curve.to_numpy(dtype=np.float64)

    @property
    def modes(self) -> list[str]:
        return sorted(self.frame["mode"].unique().tolist())

    def tensor_names(self, collection: str | None = None, mode: str | None = None) -> list[str]:
        frame = self._where(mode=mode, collection=collection)
        return list(dict.fromkeys(frame["tensor"].tolist()))

    def steps(self, mode: str = "TRAIN", collection: str | None = None) -> list[int]:
        return sorted(self._where(mode=mode, collection=collection)["step"].unique().tolist())

    def values(self, tensor: str, reduction: str = "norm", mode: str = "TRAIN") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one reduction of one tensor, in step order (EVAL: mode steps)."""
        if reduction not in COLUMNS:
            raise KeyError(f"unknown reduction {reduction!r}; known: {', '.join(COLUMNS)}")
        frame = self._where(mode=mode, tensor=tensor).sort_values("mode_step")
        x = frame["step" if mode == "TRAIN" else "mode_step"].to_numpy()
        return x, frame[reduction].to_numpy(dtype=np.float64)

    def _where(self, **equal: str | None) -> pd.DataFrame:
        frame = self.frame
        for column, value in equal.items():
            if value is not None:
                frame = frame[frame[column] == value]
        return frame


def load_records(job: str | Path) -> DebugRecords:
    """The debugger records of ``job`` (an id, a name, a job folder or "latest"), readable while it runs."""
    from kennel.jobs import load_job

    path = Path(job)
    folder = path if (path / FOLDER).is_dir() or path.name == FOLDER else load_job(str(job)).path
    folder = folder if folder.name == FOLDER else folder / FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: the job ran with the debugger off (debug.preset: off)")
    frame = read_table(folder).to_pandas()
    for column in ("mode", "collection", "tensor", "layer"):
        frame[column] = frame[column].astype(str)
    losses = read_table(folder, "losses").to_pandas()
    losses["mode"] = losses["mode"].astype(str)
    return DebugRecords(folder, frame, load_findings(folder / FINDINGS), read_rule_statuses(folder), losses)


def write_rule_statuses(folder: Path, statuses: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / RULES, statuses)


def read_rule_statuses(folder: Path) -> dict[str, Any]:
    """The statuses :func:`write_rule_statuses` wrote to a ``debug`` folder; empty before the first."""
    path = Path(folder) / RULES
    return json.loads(path.read_text()) if path.is_file() else {}


def rule_tags(job_dir: Path | str) -> dict[str, str]:
    """``{"kennel.debug.<rule>": status}`` of a job folder's ``debug/rules.json``, for its MLflow run."""
    try:
        rules = read_rule_statuses(Path(job_dir) / FOLDER)
    except (OSError, json.JSONDecodeError):
        return {}
    return {f"kennel.{FOLDER}.{rule}": str(entry.get("status", "")) for rule, entry in rules.items()}

"""What a rule reports: the debugger's and the profiler's rules, and anything else that checks a job, speak
this one shape, saved as JSON lines beside the job, and say an issue to the person running the job in one line
(:func:`announce`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kennel.jsonl import append_jsonl, read_jsonl

NO_ISSUES = "no issues"
ISSUES_FOUND = "issues found"
ERROR = "error"  # the rule itself failed; ``message`` says how
NOT_APPLICABLE = "not applicable"  # e.g. a GPU rule on a CPU-only job; ``message`` says why
NO_DATA = "no data"  # the rule applies but has too few records to judge yet; ``message`` says what it waits for
STATUSES = (NO_ISSUES, ISSUES_FOUND, ERROR, NOT_APPLICABLE, NO_DATA)


@dataclass(frozen=True)
class Finding:
    """One rule's verdict at one moment: the step it looked at, the evidence and what to change."""

    rule: str
    status: str
    step: int | None = None  # the global step at which the rule looked (None: before the first step)
    mode: str = "TRAIN"  # TRAIN or EVAL (debugger, profiler), SERVE (the drift monitor)
    tensors: tuple[str, ...] = ()  # the tensors involved (debugger rules); empty for the profiler's
    numbers: dict[str, float] = field(default_factory=dict)  # the evidence
    advice: str = ""  # what to change, in kennel's configuration terms (an issue's)
    message: str = ""  # one sentence: what was seen, or why the rule could not judge (not applicable, no data)

    @property
    def fired(self) -> bool:
        return self.status == ISSUES_FOUND

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tensors": list(self.tensors)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["tensors"] = tuple(known.get("tensors") or ())
        return cls(**known)


def save_findings(path: Path | str, findings: Iterable[Finding]) -> None:
    """Append ``findings`` to the JSON-lines file ``path`` (safe while the job runs)."""
    append_jsonl(path, (f.to_dict() for f in findings))


def load_findings(path: Path | str) -> list[Finding]:
    """Every finding in ``path``, in order; unreadable lines are skipped."""
    records, _ = read_jsonl(path)
    findings = []
    for record in records:
        try:
            findings.append(Finding.from_dict(record))
        except TypeError:
            continue
    return findings


# --- the lines a person reads ---------------------------------------------------------------------------------


class _Stderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is at each line (a test's capture, the CLI runner's), not as it was when
    kennel was imported, folded at its words to its width (:func:`kennel.lines.fitted`)."""

    def emit(self, record: logging.LogRecord) -> None:
        from kennel.lines import fitted

        try:
            print(fitted(self.format(record), sys.stderr), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


# Like Optuna's, this logger has a handler of its own and does not propagate: a finding reads the same in every
# process, the CLI's (whose logging format prefixes a level and a logger name) and a tuning worker's (which has no
# logging set up), and in a Python session. Add a handler to it, or set ``propagate``, to send the lines elsewhere.
_lines = logging.getLogger("kennel.findings")
_lines.addHandler(_Stderr())
_lines.propagate = False


def announce(kind: str, finding: Finding) -> None:
    """Tell the person running the job what a rule of ``kind`` ("debugger rule") found or why it failed:
    ``debugger rule ClassImbalance: The training classes are imbalanced ...``; during a trial the line starts with
    ``trial 4: `` (see :func:`labelled`)."""
    what = finding.message if finding.status != ERROR else f"failed ({finding.message}); the job goes on without it"
    _lines.warning("%s %s: %s", kind, finding.rule, what)


def relay(line: str) -> None:
    """Say a finding line another process wrote (a user's script's hook) as this process says its own, so that
    a tuning trial's line starts with its label like any other (see :func:`labelled`)."""
    _lines.warning("%s", line)


class _Label(logging.Filter):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = f"{self.label}: {record.getMessage()}", None
        return True


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """Start every line :func:`announce` says while the block runs with ``label`` ("trial 4"), from every thread
    (a job's rules also run on timers): a tuning worker runs one trial at a time."""
    prefix = _Label(label)
    _lines.addFilter(prefix)
    try:
        yield
    finally:
        _lines.removeFilter(prefix)

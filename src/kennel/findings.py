"""What a rule reports: the debugger's and the profiler's rules, and anything else that checks a job, speak
this one shape, saved as JSON lines beside the job."""

from __future__ import annotations

from collections.abc import Iterable
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
    mode: str = "TRAIN"  # TRAIN or EVAL
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

"""What a rule reports, in one shape for every kind of rule (the debugger's tensor rules, the profiler's
time and hardware rules): the rule, its status, where it fired (step and mode), the tensors involved, the numbers
that made it fire, and advice a person can act on.

Findings are appended to a JSON-lines file while the job runs, so a reader sees them at once and a killed job
keeps every finding written before the kill; :func:`read_findings` skips a last line cut short.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A rule's status, as SageMaker's rules report it; "not applicable" when the job lacks what the rule looks at
# (no GPU for a GPU rule, no activation layers for DeadRelu).
NO_ISSUES = "no issues"
ISSUES_FOUND = "issues found"
ERROR = "error"
NOT_APPLICABLE = "not applicable"
STATUSES = (NO_ISSUES, ISSUES_FOUND, ERROR, NOT_APPLICABLE)


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str  # what was seen, in one sentence
    advice: str  # what to change, in kennel's config terms
    step: int | None = None  # the global training step where it fired
    mode: str | None = None  # TRAIN, EVAL or PREDICT
    tensors: tuple[str, ...] = ()
    numbers: Mapping[str, float] = field(default_factory=dict)
    status: str = ISSUES_FOUND

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tensors"] = list(self.tensors)
        # JSON has no NaN or infinity; the evidence of an exploding tensor is often exactly that.
        data["numbers"] = {k: _json_number(v) for k, v in self.numbers.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["tensors"] = tuple(known.get("tensors") or ())
        known["numbers"] = {k: float(v) for k, v in (known.get("numbers") or {}).items()}
        return cls(**known)


def _json_number(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf": float() reads them back


def append_finding(path: Path | str, finding: Finding) -> None:
    """Append one finding as a line; each line is written whole and flushed, so readers never wait for the job."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(finding.to_dict()) + "\n")


def read_findings(path: Path | str) -> list[Finding]:
    """The findings of a findings file, oldest first; a missing file has none, a torn last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    findings = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            findings.append(Finding.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
    return findings


@dataclass(frozen=True)
class RuleSummary:
    """One line of a rules summary: a rule, its status, where it first fired and what it found."""

    rule: str
    status: str
    step: int | None = None
    mode: str | None = None
    finding: str = ""
    advice: str = ""
    count: int = 0  # findings of this rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(statuses: Mapping[str, str], findings: Iterable[Finding]) -> list[RuleSummary]:
    """One :class:`RuleSummary` per rule of ``statuses`` (rule -> status when no finding says otherwise), plus
    any rule that only appears in ``findings``; a rule with a finding is "issues found" at its first one."""
    by_rule: dict[str, list[Finding]] = {}
    for finding in findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    rows = []
    for rule in dict.fromkeys([*statuses, *by_rule]):
        found = by_rule.get(rule, [])
        if not found:
            rows.append(RuleSummary(rule, statuses.get(rule, NO_ISSUES)))
            continue
        first = min(found, key=lambda f: (f.step is None, f.step or 0))
        rows.append(RuleSummary(rule, first.status, first.step, first.mode, first.message, first.advice, len(found)))
    return rows


def rule_tags(job_dir: Path | str) -> dict[str, str]:
    """``{"kennel.<folder>.<rule>": status}`` for every ``<folder>/rules.json`` of a job folder (the debugger's
    ``debug/``, the profiler's), for a tracking store to show beside the job."""
    tags = {}
    for path in sorted(Path(job_dir).glob("*/rules.json")):
        try:
            rules = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for rule, entry in rules.items():
            tags[f"kennel.{path.parent.name}.{rule}"] = str(entry.get("status", ""))
    return tags

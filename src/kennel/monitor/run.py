"""One monitor run: the reference and the traffic of a model, its rules' findings, and what the page and the
command say about them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kennel.data.layout import Split
from kennel.findings import ERROR, Finding
from kennel.monitor.comparison import Comparison
from kennel.monitor.reference import Progress, Reference, load_reference
from kennel.monitor.rules import BUILTIN_RULES, MONITOR_RULES, DriftRule
from kennel.monitor.traffic import Traffic, load_traffic


@dataclass
class MonitorRun:
    artifact: Path
    info: Any  # kennel.artifact.ArtifactInfo
    reference: Reference
    traffic: Traffic
    comparison: Comparison
    rules: list[DriftRule]
    findings: list[Finding]
    job: dict[str, Any] | None = None  # job.json of the job whose model it is, when there is one

    @property
    def fired(self) -> list[Finding]:
        return [f for f in self.findings if f.fired]

    @property
    def least_lines(self) -> int:
        """The fewest capture lines any rule judges from."""
        return min((rule.min_lines for rule in self.rules), default=0)

    @property
    def too_few(self) -> bool:
        """Whether the capture has too few lines for any rule to judge."""
        return len(self.comparison.traffic) < self.least_lines


def default_rules() -> list[DriftRule]:
    return [MONITOR_RULES.build(name) for name in BUILTIN_RULES]


def judge(comparison: Comparison, rules: Sequence[DriftRule]) -> list[Finding]:
    """Every rule's finding on ``comparison``; a rule that raises is an "error" finding, the others still run."""
    findings = []
    for rule in rules:
        try:
            findings.append(rule.check(comparison))
        except Exception as exc:  # one broken rule must not cost the others
            findings.append(Finding(rule.name, ERROR, mode=comparison.mode, message=f"{type(exc).__name__}: {exc}"))
    return findings


def run_monitor(
    artifact_dir: Path | str,
    split: Split,
    capture_dir: Path | str,
    cache: Path | None,
    progress: Progress | None = None,
    job: dict[str, Any] | None = None,
    rules: Sequence[DriftRule] | None = None,
) -> MonitorRun:
    """Compare the traffic captured in ``capture_dir`` with the artifact's answers on ``split`` (its reference,
    kept in ``cache``; ``progress`` hears of it while it is computed)."""
    from kennel.artifact import read_info

    artifact_dir = Path(artifact_dir)
    info = read_info(artifact_dir)
    traffic = load_traffic(capture_dir, info)
    reference = load_reference(artifact_dir, split, cache, progress)
    comparison = Comparison(reference.sample, traffic.sample)
    rules = list(rules) if rules is not None else default_rules()
    return MonitorRun(artifact_dir, info, reference, traffic, comparison, rules, judge(comparison, rules), job)

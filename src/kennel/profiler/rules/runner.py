"""Feeds the profile to every rule and keeps what they found."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from kennel.engine import LoopState
from kennel.findings import ERROR, Finding, save_findings
from kennel.profiler.profile import Profile
from kennel.profiler.rules.base import Rule

log = logging.getLogger(__name__)


class RuleRunner:
    """Runs ``rules`` on a profile. A finding is appended to ``path`` whenever a rule's status changes (and, on
    the final check, every rule's last word), so a killed job keeps what was found. A rule that fired stays
    fired with its first finding; one in ``stop_on`` asks the loop to stop."""

    def __init__(self, rules: Iterable[Rule], path: Path, stop_on: Iterable[str] = ()) -> None:
        self.rules = list(rules)
        self.path = Path(path)
        self.stop_on = set(stop_on)
        self.latest: dict[str, Finding] = {}

    def check(self, profile: Profile, state: LoopState | None = None, final: bool = False) -> list[Finding]:
        """Evaluate every rule that has not fired yet; return the findings written."""
        written = []
        for rule in self.rules:
            before = self.latest.get(rule.name)
            if before is not None and before.fired:
                continue
            finding = self._evaluate(rule, profile)
            self.latest[rule.name] = finding
            if final or before is None or before.status != finding.status:
                written.append(finding)
        save_findings(self.path, written)
        for finding in written:
            if finding.fired and finding.rule in self.stop_on and state is not None:
                state.request_stop(f"profiler rule {finding.rule}: {finding.advice}")
        return written

    @staticmethod
    def _evaluate(rule: Rule, profile: Profile) -> Finding:
        reason = rule.not_applicable(profile)
        if reason is not None:
            return rule.skipped(profile, reason)
        try:
            return rule.check(profile)
        except Exception as exc:  # a broken rule reports itself; it never ends the job
            log.warning("profiler rule %s failed", rule.name, exc_info=True)
            return Finding(rule.name, ERROR, step=profile.last_step, advice=f"{type(exc).__name__}: {exc}")

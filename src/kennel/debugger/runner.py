"""The one place rules run: it feeds each rule the windows of the events it asked for, records the first
finding of each rule, and knows every rule's status."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kennel.debugger.rules import NotApplicable, Rule
from kennel.debugger.window import Window
from kennel.findings import ERROR, ISSUES_FOUND, NO_ISSUES, NOT_APPLICABLE, Finding, save_findings

log = logging.getLogger(__name__)


class RuleRunner:
    """Runs ``rules`` on windows; appends each rule's first finding to ``findings_path``. A rule that raises
    is reported as "error" and not run again; a rule that found something is not run again either (its first
    finding is the one a person acts on). Thread-safe: a timer thread runs the clock rules."""

    def __init__(self, rules: list[Rule], findings_path: Path) -> None:
        self.rules = rules
        self.findings_path = Path(findings_path)
        self.fired: dict[str, Finding] = {}
        self.judged: set[str] = set()
        self.not_applicable: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._by_event: dict[str, list[Rule]] = {}
        for rule in rules:
            for event in rule.events:
                self._by_event.setdefault(event, []).append(rule)
        self._lock = threading.Lock()

    def wants(self, event: str) -> bool:
        return bool(self._by_event.get(event))

    def run(self, window: Window) -> list[tuple[Rule, Finding]]:
        """The new findings of the rules that listen to ``window.event``."""
        new = []
        with self._lock:
            for rule in self._by_event.get(window.event, ()):
                if rule.name in self.fired or rule.name in self.errors:
                    continue
                try:
                    finding = rule.check(window)
                except NotApplicable as reason:
                    self.not_applicable[rule.name] = str(reason)
                    continue
                except Exception as error:  # a broken rule must not break the job
                    log.warning("debugger rule %s failed", rule.name, exc_info=True)
                    self.errors[rule.name] = f"{type(error).__name__}: {error}"
                    continue
                self.judged.add(rule.name)
                if finding is not None:
                    self.fired[rule.name] = finding
                    save_findings(self.findings_path, [finding])
                    new.append((rule, finding))
        return new

    def status(self, rule: Rule) -> tuple[str, str]:
        """``(status, why)``: a rule never judged for want of data is "not applicable", with the reason."""
        if rule.name in self.fired:
            return ISSUES_FOUND, self.fired[rule.name].message
        if rule.name in self.errors:
            return ERROR, self.errors[rule.name]
        if rule.name not in self.judged and rule.name in self.not_applicable:
            return NOT_APPLICABLE, self.not_applicable[rule.name]
        return NO_ISSUES, ""

    def statuses(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = {}
            for rule in self.rules:
                status, why = self.status(rule)
                rows[rule.name] = {"status": status, "why": why, "params": asdict(rule)}
            return rows

    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": {name: finding.to_dict() for name, finding in self.fired.items()},
            "judged": sorted(self.judged),
            "not_applicable": dict(self.not_applicable),
            "errors": dict(self.errors),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired = {name: Finding.from_dict(data) for name, data in state.get("fired", {}).items()}
        self.judged = set(state.get("judged", ()))
        self.not_applicable = dict(state.get("not_applicable", {}))
        self.errors = dict(state.get("errors", {}))

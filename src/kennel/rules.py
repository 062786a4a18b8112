"""Rules: small strategy classes that judge what a job has recorded so far, written, selected, configured and
run the same way in both families: the debugger's read a :class:`~kennel.debugger.window.Window` (reductions,
losses, epochs), the profiler's a :class:`~kennel.profiler.profile.Profile` (step times, system samples).

A rule's ``check`` returns None when nothing is wrong, else a finding made with ``issue`` (what was seen, what to
do), ``no_data`` (it applies but has too few records yet) or ``not_applicable`` (the job lacks what it reads).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from kennel.findings import ERROR, ISSUES_FOUND, NO_DATA, NO_ISSUES, NOT_APPLICABLE, Finding, announce, save_findings
from kennel.registry import Registry
from kennel.validation import one_line

log = logging.getLogger(__name__)


E = TypeVar("E")  # what a family's rules read; its ``step`` and ``mode`` are those of every finding on it


@dataclass
class Rule(Generic[E]):
    """Subclass as a ``@dataclass`` of ``Rule[Window]`` (debugger) or ``Rule[Profile]`` (profiler), register it
    with ``@DEBUGGER_RULES.rule`` or ``@PROFILER_RULES.rule``, and select it in the config
    (``debug.rules: {Name: {param: value}}``, ``profiler.rules: ...``). The first paragraph of its docstring
    describes it in the reports."""

    stop: bool = False  # ask the loop to stop when the rule finds an issue

    name: ClassVar[str] = ""  # set at registration; a class that sets its own is registered under it
    events: ClassVar[frozenset[str]] = frozenset()  # the family's events the rule runs on; empty: its default

    def check(self, evidence: E) -> Finding | None:
        raise NotImplementedError

    @classmethod
    def describe(cls) -> str:
        """The docstring's first paragraph, on one line: what the rule watches."""
        return " ".join((cls.__doc__ or cls.name).strip().split("\n\n")[0].split())

    def configure(self, options: Any) -> None:
        """Tell the family's capture what this rule's evidence needs (the debugger's thresholds for the
        reductions its hooks compute); most rules need nothing."""

    def clock_interval(self) -> float:
        """Seconds between two runs of a rule on the "clock" event (a timer, while the loop may be stuck)."""
        return 60.0

    def plot(self, evidence: E, finding: Finding, ax: Any) -> None:
        """Draw the evidence of ``finding`` on matplotlib axes ``ax`` (the profiler's report draws each issue)."""
        raise NotImplementedError

    # --- the verdicts ---------------------------------------------------------------------------------------

    def issue(
        self, evidence: E, message: str, advice: str, tensors: Iterable[str] = (), step: int | None = None, **numbers
    ) -> Finding:
        """What was seen (``message``), what to change (``advice``), and the numbers behind it."""
        return self._finding(evidence, ISSUES_FOUND, message, advice, tensors, step, numbers)

    def fine(self, evidence: E, **numbers: float) -> Finding:
        """Nothing wrong, with the numbers that say so."""
        return self._finding(evidence, NO_ISSUES, "", "", (), None, numbers)

    def no_data(self, evidence: E, reason: str, **numbers: float) -> Finding:
        """The rule applies but ``reason``: too few records to judge yet."""
        return self._finding(evidence, NO_DATA, reason, "", (), None, numbers)

    def not_applicable(self, evidence: E, reason: str) -> Finding:
        """The job lacks what the rule reads: ``reason`` says what, and how to capture it if it can be."""
        return self._finding(evidence, NOT_APPLICABLE, reason, "", (), None, {})

    def _finding(self, evidence, status: str, message: str, advice: str, tensors, step, numbers) -> Finding:
        return Finding(
            self.name,
            status,
            step=evidence.step if step is None else int(step),
            mode=evidence.mode,
            tensors=tuple(tensors),
            numbers={k: float(v) for k, v in numbers.items()},
            advice=advice,
            message=sentence(message),
        )


@cache
def _validator(cls: type[Rule]) -> TypeAdapter:
    return TypeAdapter(cls)


class RuleRegistry(Registry[type[Rule]]):
    """One family's rules by name: ``kind`` names them in errors ("debugger rule"), ``key`` is where a config
    sets them ("debug.rules"), ``events`` are the events a rule that names none runs on."""

    def __init__(self, kind: str, key: str, events: Iterable[str] = ()) -> None:
        super().__init__(kind)
        self.key = key
        self.events = frozenset(events)

    def rule(self, cls: type[Rule]) -> type[Rule]:
        """Class decorator: register ``cls`` under its own ``name`` if it sets one, else its class name."""
        name = cls.__dict__.get("name") or cls.__name__
        self.register(name, cls)
        cls.name = name
        cls.events = cls.events or self.events
        return cls

    def build(self, name: str, params: Mapping[str, Any] | None = None) -> Rule:
        """Rule ``name`` with ``params`` checked against its fields; a ValueError names the rule and the key."""
        try:
            cls = self.get(name)
        except KeyError as exc:
            raise ValueError(f"{self.key}: {exc.args[0]}") from None
        params = dict(params or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.key}.{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
        try:
            return _validator(cls).validate_python(params)
        except ValidationError as exc:
            raise ValueError(f"{self.key}.{name}: {one_line(exc, name)}") from None

    def select(self, settings: Mapping[str, Mapping[str, Any] | bool], defaults: Iterable[str]) -> list[Rule]:
        """The rules a config runs: each of ``defaults`` unless set to false, then each other rule it names
        (a custom one), with the parameters it sets."""
        defaults = list(defaults)
        names = [n for n in defaults if settings.get(n, True) is not False]
        names += [n for n, params in settings.items() if n not in defaults and params is not False]
        return [self.build(n, p if isinstance(p := settings.get(n), Mapping) else {}) for n in names]


def import_modules(modules: Iterable[str], key: str) -> None:
    """Import the modules a config lists under ``key`` (``debug.imports``) so that their rules register."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken module is the config's error, named as such
            raise ValueError(f"{key}: cannot import {module!r} ({type(exc).__name__}: {exc})") from None


# A verdict that says more is not taken back by a later one that says less: a validation pass too short to
# judge does not undo what the training steps showed, nor does a mode that lacks the evidence another has.
_SAYS = {NOT_APPLICABLE: 0, NO_DATA: 1, NO_ISSUES: 2}


class RuleRunner(Generic[E]):
    """Runs ``rules`` on evidence and keeps each rule's latest verdict. A finding is appended to ``path``
    whenever a rule's status changes (and every rule's on a final run), so a killed job keeps what was found.
    The first issue sticks: that rule is not run again, and one with ``stop`` asks the loop to stop. A rule
    that raises is an "error" and the job goes on. Thread-safe: the debugger's clock rules run on a timer."""

    def __init__(
        self,
        rules: Iterable[Rule[E]],
        path: Path | str,
        kind: str = "rule",
        phrasing: Callable[[str], str] | None = None,
    ) -> None:
        self.rules = list(rules)
        self.path = Path(path)
        self.kind = kind  # "debugger rule": how finding lines and stop reasons name a rule
        # Rewords what a finding says for the job at hand (a user's script has no kennel settings to name).
        self.phrasing = phrasing
        self.latest: dict[str, Finding] = {}
        self._lock = threading.RLock()

    @property
    def fired(self) -> dict[str, Finding]:
        return {name: finding for name, finding in self.latest.items() if finding.fired}

    def wants(self, event: str) -> bool:
        return any(event in rule.events for rule in self.rules)

    def run(self, evidence: E, state: Any = None, event: str | None = None, final: bool = False) -> list[Finding]:
        """Run the rules that listen to ``event`` (all of them when None) and have found no issue yet; returns
        the findings written. ``state`` (the loop's) is asked to stop for a ``stop`` rule's issue."""
        written = []
        with self._lock:
            for rule in self.rules:
                before = self.latest.get(rule.name)
                if (event is not None and event not in rule.events) or (before is not None and before.fired):
                    continue
                now = self.evaluate(rule, evidence)
                if before is not None and _SAYS.get(now.status, 3) < _SAYS.get(before.status, -1):
                    now = before
                if final:
                    now = _as_ended(now)
                self.latest[rule.name] = now
                changed = before is None or now.status != before.status
                if final or changed:
                    written.append(now)
                if now.status == ERROR and changed:  # once, not at every event the broken rule runs on
                    announce(self.kind, now)
                if now.fired:
                    announce(self.kind, now)
                    if rule.stop and state is not None:
                        state.request_stop(f"{self.kind} {rule.name}: {now.message}")
            save_findings(self.path, written)
        return written

    def evaluate(self, rule: Rule[E], evidence: E) -> Finding:
        """``rule``'s verdict on ``evidence``, an "error" finding if it raises."""
        try:
            finding = rule.check(evidence)
        except Exception as exc:  # a broken rule reports itself; it never ends the job
            log.info("%s %s failed", self.kind, rule.name, exc_info=True)  # the traceback, for kennel -v
            return Finding(
                rule.name, ERROR, step=evidence.step, mode=evidence.mode, message=f"{type(exc).__name__}: {exc}"
            )
        if finding is None:
            return rule.fine(evidence)
        if self.phrasing is not None:
            finding = replace(finding, message=self.phrasing(finding.message), advice=self.phrasing(finding.advice))
        return finding

    def statuses(self, ended: bool = False) -> dict[str, dict[str, Any]]:
        """Per rule: its status, why (what it found, or why it could not judge) and its parameters; ``ended``:
        said of a job that has ended (what it waited for never came)."""
        with self._lock:
            rows = {}
            for rule in self.rules:
                latest = self.latest.get(rule.name)
                if latest is not None and ended:
                    latest = _as_ended(latest)
                never = "Never checked: the job ended first." if ended else "Not checked yet."
                status, why = (latest.status, latest.message) if latest else (NO_DATA, never)
                rows[rule.name] = {"status": status, "why": why, "params": asdict(rule)}
            return rows

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"latest": {name: finding.to_dict() for name, finding in self.latest.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            saved = state.get("latest", state.get("fired", {}))  # "fired": a checkpoint of an older kennel
            self.latest = {name: Finding.from_dict(data) for name, data in saved.items()}


def _as_ended(finding: Finding) -> Finding:
    """A "no data" finding as said once the job has ended: its records "so far" are all it will have."""
    if finding.status != NO_DATA or " so far" not in finding.message:
        return finding
    return replace(finding, message=finding.message.replace(" so far", " in all"))


def sentence(text: str) -> str:
    """Capitalise the first letter only (tensor names keep their case) and end with a full stop."""
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text

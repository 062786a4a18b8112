"""A debugger rule: a dataclass whose fields are its parameters (with SageMaker's documented defaults), and one
method that looks at a :class:`~kennel.debugger.window.Window` and returns a finding or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from kennel.debugger.window import CaptureOptions, Window
from kennel.findings import ISSUES_FOUND, Finding
from kennel.registry import Registry
from kennel.validation import one_line


class NotApplicable(Exception):
    """Raised by ``check`` when the job lacks what the rule looks at (no activation layers, no validation
    split...); the message says what is missing and how to capture it."""


@dataclass
class Rule:
    """Subclass as a ``@dataclass``, decorate with ``@register_rule("Name")``, and select it in the config
    (``debug.rules: {Name: {param: value}}``). ``stop: true`` ends the job when the rule fires."""

    stop: bool = False

    name: ClassVar[str] = ""
    # The events after which ``check`` runs: "save" (a mode saved a step), "steps" (every LOSS_EVERY training
    # steps, saved or not: the losses of every step are there), "epoch" (an epoch ended, after its validation) or
    # "clock" (a timer, while the loop may be stuck).
    events: ClassVar[frozenset[str]] = frozenset({"save"})

    def check(self, window: Window) -> Finding | None:
        raise NotImplementedError

    def clock_interval(self) -> float:
        """Seconds between two runs of a "clock" rule."""
        return 60.0

    def configure(self, options: CaptureOptions) -> None:
        """Set the thresholds the hooks need to compute this rule's reductions (most rules need none)."""

    def finding(self, window: Window, message: str, advice: str, tensors=(), **numbers: float) -> Finding:
        return Finding(
            rule=self.name,
            status=ISSUES_FOUND,
            message=message,
            advice=advice,
            step=window.step,
            mode=window.mode,
            tensors=tuple(tensors),
            numbers={k: float(v) for k, v in numbers.items()},
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Rule:
        """An instance with ``params`` checked against the dataclass fields; errors name the rule and the key."""
        from pydantic import TypeAdapter, ValidationError

        known = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"debug.rules.{cls.name}: unknown parameter(s) {unknown}; known: {', '.join(known)}")
        try:
            return TypeAdapter(cls).validate_python(dict(params))
        except ValidationError as exc:
            raise ValueError(f"debug.rules.{cls.name}: {one_line(exc, cls.name)}") from None


RULES: Registry[type[Rule]] = Registry("debugger rule")


def register_rule(name: str):
    """Class decorator: register a :class:`Rule` subclass under ``name`` (a duplicate name is an error)."""

    def wrap(cls: type[Rule]) -> type[Rule]:
        cls.name = name
        return RULES.register(name, cls)

    return wrap


def short_list(names, limit: int = 3) -> str:
    """ "a, b, c and 4 more": tensor names for a sentence."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def sentence(text: str) -> str:
    """Capitalise the first letter only (tensor names keep their case) and end with a full stop."""
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text


def layers_above(save, rows, column: str, percent: float, missing: str) -> tuple[list[str], float] | None:
    """The names of the tensors of ``rows`` whose ``column`` (a share) is above ``percent``, and the largest share
    in percent; None when none is; :class:`NotApplicable` (``missing``) when there are no rows at all."""
    if not len(rows):
        raise NotApplicable(missing)
    shares = save.column(column, rows) * 100
    above = rows[shares > percent]
    return ([save.names[i] for i in above], float(shares.max())) if len(above) else None

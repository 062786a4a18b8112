"""The shape of a profiler rule: thresholds as dataclass fields, one ``check`` that reads a profile and returns a
finding. A rule that fires also draws its evidence (``plot``) for the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pydantic

from kennel.findings import ISSUES_FOUND, NO_ISSUES, NOT_APPLICABLE, Finding
from kennel.registry import Registry
from kennel.validation import one_line

if TYPE_CHECKING:
    from kennel.profiler.profile import Profile

PROFILER_RULES: Registry[type[Rule]] = Registry("profiler rule")


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Add a rule class to :data:`PROFILER_RULES` under its class name."""
    PROFILER_RULES.register(cls.__name__, cls)
    return cls


@dataclass(frozen=True)
class Rule:
    """Base class. Subclasses are frozen dataclasses whose fields are their thresholds (set in a job's config as
    ``profiler.rules.<Name>.<field>``); ``check`` looks at the records so far and returns a :class:`Finding`."""

    __pydantic_config__ = pydantic.ConfigDict(extra="forbid")  # an unknown threshold is an error

    min_gpus: ClassVar[int] = 0  # GPUs the job must use for the rule to apply
    min_ranks: ClassVar[int] = 0  # ... or, when set, processes (torchrun ranks) that also make it apply

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def describe(cls) -> str:
        """The docstring's first paragraph, on one line: what the rule watches."""
        return " ".join((cls.__doc__ or cls.__name__).strip().split("\n\n")[0].split())

    def not_applicable(self, profile: Profile) -> str | None:
        """Why the rule does not apply to this job, or None when it does."""
        gpus = profile.gpu_count
        if self.min_ranks and profile.world_size >= self.min_ranks:
            return None
        if self.min_gpus and gpus < self.min_gpus:
            where = "on the CPU" if gpus == 0 else f"on {gpus} GPU"
            ranks = f" or {self.min_ranks} processes" if self.min_ranks else ""
            return f"needs {self.min_gpus} GPU(s) with metrics{ranks}; the job runs {where}"
        return None

    def check(self, profile: Profile) -> Finding:
        raise NotImplementedError

    def plot(self, profile: Profile, finding: Finding, ax: Any) -> None:
        """Draw the evidence of ``finding`` on matplotlib axes ``ax``."""
        raise NotImplementedError

    # --- helpers for subclasses ------------------------------------------------------------------------------

    def found(self, profile: Profile, numbers: dict[str, float], advice: str, step: int | None = None) -> Finding:
        return self._finding(profile, ISSUES_FOUND, numbers, advice, step)

    def fine(self, profile: Profile, numbers: dict[str, float] | None = None) -> Finding:
        return self._finding(profile, NO_ISSUES, numbers or {}, "")

    def skipped(self, profile: Profile, reason: str) -> Finding:
        return self._finding(profile, NOT_APPLICABLE, {}, reason)

    def _finding(self, profile: Profile, status: str, numbers: dict[str, float], advice: str, step=None) -> Finding:
        numbers = {k: round(float(v), 6) for k, v in numbers.items()}
        return Finding(
            self.name, status, step=profile.last_step if step is None else step, numbers=numbers, advice=advice
        )


def rule_class(name: str) -> type[Rule]:
    """The rule registered as ``name``; raises ValueError listing the known rules."""
    try:
        return PROFILER_RULES.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def build_rule(name: str, settings: dict[str, Any] | None = None) -> Rule:
    """Rule ``name`` with its thresholds overridden by ``settings``; raises ValueError naming a bad key."""
    cls = rule_class(name)
    try:
        return pydantic.TypeAdapter(cls).validate_python(dict(settings or {}))
    except pydantic.ValidationError as exc:
        fields = ", ".join(f.name for f in dataclasses.fields(cls)) or "none"
        raise ValueError(f"profiler rule {name}: {one_line(exc, name)} (thresholds: {fields})") from None


def recent(profile: Profile, values: np.ndarray, window: int) -> np.ndarray:
    """The last ``window`` samples of ``values`` taken while the loop trained."""
    return values[profile.training_samples()][-window:]


def growth(values: np.ndarray, window: int, patience: int) -> tuple[float, float] | None:
    """Mean of the first and of the last ``window`` values after skipping ``patience`` (warm-up), or None when
    there are too few to tell."""
    values = values[np.isfinite(values)][patience:]
    if len(values) < 2 * window:
        return None
    return float(values[:window].mean()), float(values[-window:].mean())

"""A tuning job's settings, validated once at the edge: what defines the study (fixed for its life, stored with
it) and what one session of it runs (the stopping criteria and the workers, which a resume may change)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kennel.tune.pruners import PRUNERS
from kennel.tune.space import SearchSpace
from kennel.tune.strategies import STRATEGIES

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def valid_study_name(name: str) -> str:
    if not STUDY_NAME.match(name):
        raise ValueError(f"study name {name!r}: use letters, digits, '.', '_' or '-' (at most 80)")
    return name


def default_direction(objective: str) -> Literal["maximize", "minimize"]:
    """Losses go down, everything else kennel records (accuracies, top-5) goes up."""
    return "minimize" if "loss" in objective else "maximize"


def _known(registry, name: str) -> str:
    try:
        registry.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudySettings(_Strict):
    """What defines a study. Changing any of these means a new study (``--warm-start`` can seed it)."""

    space: SearchSpace
    kind: str = Field(
        "training", description="training (kennel jobs) or script (the user's script): kennel.tune.trials"
    )
    objective: str = Field("best_valid_accuracy", min_length=1, description="a job metric, e.g. valid_loss")
    direction: Literal["maximize", "minimize"] | None = None
    strategy: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    baseline: bool = Field(True, description="the first trial tries the base configuration's own values")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, name: str) -> str:
        from kennel.tune.trials import known_kinds

        return _known(known_kinds(), name)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        return _known(STRATEGIES, name)

    @field_validator("pruner")
    @classmethod
    def _known_pruner(cls, name: str) -> str:
        return _known(PRUNERS, name)

    @model_validator(mode="after")
    def _direction(self) -> StudySettings:
        if self.direction is None:
            self.direction = default_direction(self.objective)
        return self

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


class SessionSettings(_Strict):
    """One run of ``kennel tune``: when to stop, and how many workers share the study."""

    trials: int = Field(20, ge=1, le=100_000, description="trials the study holds when done, earlier ones included")
    timeout_s: float | None = Field(None, gt=0, description="start no trial after this many seconds")
    target: float | None = Field(None, description="stop once the best objective reaches this")
    parallel: int = Field(1, ge=1, le=256, description="worker processes on this machine")
    # Set by the runner for its workers:
    deadline: float | None = None  # time.time() after which no trial starts
    threads: int | None = None  # torch threads per worker process

"""A search space: which training config fields a study tunes, and over which values, read from a YAML file.

    parameters:
      optim.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
      epochs: {type: int, low: 5, high: 40, step: 5}
      data.batch_size: {type: categorical, choices: [32, 64, 128]}

A name is a dotted training config key (``kennel train --print-config`` shows them all). ``float`` and ``int``
take ``low``, ``high``, ``log`` (sample on a log scale) or ``step``, and optionally ``grid`` (the values the grid
strategy tries); ``categorical`` takes ``choices``. Every mistake is a :class:`SpaceError` naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kennel.errors import KennelError
from kennel.validation import one_line

if TYPE_CHECKING:
    import optuna

Scalar = bool | int | float | str | None


class SpaceError(KennelError, ValueError):
    """A search space that cannot be used; the message names the parameter and the problem."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def extremes(self) -> list[Scalar]:
        """Values that must all be valid for the config field (checked when a study starts)."""
        raise NotImplementedError


class _Numeric(_Param):
    log: bool = Field(False, description="sample on a log scale")
    grid: list[float] | None = Field(None, description="the values the grid strategy tries")

    @model_validator(mode="after")
    def _bounds(self) -> _Numeric:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples a log scale continuously)")
        outside = [v for v in self.grid or [] if not self.low <= v <= self.high]
        if outside:
            raise ValueError(f"grid values {outside} lie outside [{self.low}, {self.high}]")
        return self

    def extremes(self) -> list[Scalar]:
        return [self.low, self.high]

    def _stepped(self) -> list[float] | None:
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self.low + i * self.step for i in range(count)]


class FloatParam(_Numeric):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)

    def extremes(self) -> list[Scalar]:
        # A fractional value between the bounds too: it catches a float range over an integer field.
        middle = self.low * (self.high / self.low) ** 0.618 if self.log else self.low + 0.618 * (self.high - self.low)
        return [self.low, middle, self.high]

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Scalar] | None:
        return self.grid or self._stepped()


class IntParam(_Numeric):
    type: Literal["int"]
    low: int
    high: int
    step: int | None = Field(None, gt=0)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step or 1)

    def grid_values(self) -> list[Scalar] | None:
        if self.grid:
            return [int(v) for v in self.grid]
        return list(range(self.low, self.high + 1, self.step or 1))


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalParam:
        if len({repr(c) for c in self.choices}) < len(self.choices):
            raise ValueError(f"choices repeat a value: {self.choices}")
        return self

    def extremes(self) -> list[Scalar]:
        return list(self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Scalar:
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self) -> list[Scalar] | None:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    parameters: dict[str, Param] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """The trial's values, as dotted config overrides."""
        return {name: param.suggest(trial, name) for name, param in self.parameters.items()}

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {name: param.distribution() for name, param in self.parameters.items()}

    def grid(self) -> dict[str, list[Scalar]]:
        """Every parameter's grid values; a continuous parameter needs ``grid`` or ``step`` for this."""
        grid = {}
        for name, param in self.parameters.items():
            values = param.grid_values()
            if values is None:
                raise SpaceError(
                    f"parameter {name}: the grid strategy needs a finite set of values; "
                    "give it `grid: [...]` or `step:`, or choose another strategy"
                )
            grid[name] = values
        return grid

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def upper(self, name: str, default: float) -> float:
        """The largest value ``name`` can take (``default`` when the space does not tune it)."""
        param = self.parameters.get(name)
        if param is None:
            return default
        return max(v for v in param.extremes() if isinstance(v, (int, float)))

    def contains(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``params`` this space tunes and whose values it can take."""
        kept = {}
        for name, value in params.items():
            param = self.parameters.get(name)
            if param is None:
                continue
            distribution = param.distribution()
            try:
                if distribution._contains(distribution.to_internal_repr(value)):
                    kept[name] = value
            except (ValueError, TypeError):
                continue
        return kept

    def check_against(self, base: dict[str, Any]) -> None:
        """Every parameter must be a training config key and accept its values on top of ``base``."""
        from kennel.config import ConfigError, TrainConfig, load_config

        fields = TrainConfig().model_dump()
        for name, param in self.parameters.items():
            _check_key(name, fields)
            for value in param.extremes():
                try:
                    load_config(base=base, overrides={name: value})
                except ConfigError as exc:
                    problem = str(exc).split("\n", 1)[-1].strip()
                    raise SpaceError(f"parameter {name}: the training config rejects {value!r}: {problem}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _check_key(name: str, fields: dict[str, Any]) -> None:
    node: Any = fields
    for depth, part in enumerate(name.split(".")):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(name.split(".")[:depth]) or "the top level"
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "no sub-keys"
            raise SpaceError(f"parameter {name}: not a training config key ({where} has: {known})")
        node = node[part]
    if isinstance(node, dict):
        raise SpaceError(f"parameter {name}: a config section, not a value; tune one of its keys: {', '.join(node)}")


def _parameter(loc: tuple[str, ...]) -> str:
    """``('parameters', 'optim.lr', 'float', 'low')`` -> ``parameter optim.lr.low``: the union's tag dropped."""
    if loc[:1] != ("parameters",) or len(loc) < 2:
        return ".".join(loc)
    rest = loc[3:] if len(loc) > 2 and loc[2] in ("float", "int", "categorical") else loc[2:]
    return f"parameter {loc[1]}" + (f": {'.'.join(rest)}" if rest else "")


def _describe(error: ValidationError, source: str) -> str:
    return f"invalid search space ({source}): {one_line(error, name=_parameter)}"


def parse_space(data: Any, source: str = "space") -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"invalid search space ({source}): expected a mapping with `parameters:`")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(_describe(exc, source)) from None


def shipped_spaces() -> list[str]:
    """The names of the spaces that come with kennel (``kennel tune --space NAME``)."""
    folder = resources.files("kennel.tune") / "spaces"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(ref: str | Path) -> SearchSpace:
    """A space from a YAML file, or one of :func:`shipped_spaces` by name."""
    path = Path(ref).expanduser()
    if path.is_file():
        text, source = path.read_text(), str(path)
    elif str(ref) in shipped_spaces():
        text, source = (resources.files("kennel.tune") / "spaces" / f"{ref}.yaml").read_text(), f"space {ref}"
    else:
        raise SpaceError(f"no space file {ref!r}; give a YAML file or a shipped space: {', '.join(shipped_spaces())}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"search space {source} is not valid YAML: {exc}") from None
    return parse_space(data, source)

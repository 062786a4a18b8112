"""Search strategies by name: each builds an Optuna sampler. ``kennel tune --strategy NAME`` picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kennel.registry import Registry
from kennel.tune.space import SearchSpace

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@dataclass(frozen=True)
class StrategyContext:
    space: SearchSpace
    seed: int  # differs per worker and per session, so parallel workers do not propose the same points
    trials: int  # the study's trial budget


@dataclass(frozen=True)
class Strategy:
    description: str
    build: Callable[[StrategyContext], BaseSampler]
    # The number of distinct trials it can propose (the budget is capped there), or None when unbounded.
    size: Callable[[SearchSpace], int | None] = lambda space: None
    # Whether the study may start from the base configuration's own values (a grid only tries its points).
    baseline: bool = True


STRATEGIES: Registry[Strategy] = Registry("tuning strategy")


def _startup_trials(trials: int) -> int:
    # Random trials before the model-based search begins: Optuna's 10 would be half of a 20-trial budget.
    return max(3, min(10, trials // 4))


def _tpe(ctx: StrategyContext) -> BaseSampler:
    from optuna.samplers import TPESampler

    # multivariate: model the parameters jointly (learning rate and batch size interact); constant_liar: a
    # parallel worker treats the others' running trials as poor, so it does not propose the same point.
    return TPESampler(
        seed=ctx.seed, n_startup_trials=_startup_trials(ctx.trials), multivariate=True, constant_liar=True
    )


def _random(ctx: StrategyContext) -> BaseSampler:
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=ctx.seed)


def _grid(ctx: StrategyContext) -> BaseSampler:
    from optuna.samplers import GridSampler

    class Grid(GridSampler):
        # Optuna's grid calls study.stop() once every point ran, which only works inside study.optimize; kennel's
        # workers ask and tell, and stop on their budget, which is capped at the grid's size.
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid(ctx.space.grid(), seed=ctx.seed)


def _cmaes(ctx: StrategyContext) -> BaseSampler:
    from optuna.samplers import CmaEsSampler

    # CMA-ES models numeric parameters only; categorical ones are sampled at random (by design, no warning).
    return CmaEsSampler(seed=ctx.seed, n_startup_trials=_startup_trials(ctx.trials), warn_independent_sampling=False)


STRATEGIES.register("tpe", Strategy("Bayesian optimization (tree-structured Parzen estimator)", _tpe))
STRATEGIES.register("random", Strategy("independent random samples", _random))
STRATEGIES.register(
    "grid",
    Strategy("every combination of the parameters' grid values", _grid, size=SearchSpace.grid_size, baseline=False),
)
STRATEGIES.register("cmaes", Strategy("CMA-ES evolution strategy over the numeric parameters", _cmaes))

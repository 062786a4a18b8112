"""Pruners by name: each stops weak trials early from the objective they report every epoch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kennel.registry import Registry

if TYPE_CHECKING:
    from optuna.pruners import BasePruner


@dataclass(frozen=True)
class PrunerContext:
    max_epochs: int  # the most epochs any trial can run (the resource Hyperband splits)
    trials: int


@dataclass(frozen=True)
class Pruner:
    description: str
    build: Callable[[PrunerContext], BasePruner]


PRUNERS: Registry[Pruner] = Registry("pruner")


def _none(ctx: PrunerContext) -> BasePruner:
    from optuna.pruners import NopPruner

    return NopPruner()


def _median(ctx: PrunerContext) -> BasePruner:
    from optuna.pruners import MedianPruner

    # Compare only once a few trials have finished, and not in the first fifth of the longest schedule: early on,
    # a long cosine schedule still learns fast while a short one has already settled, and judging them there
    # would prune every long trial.
    warmup = max(2, ctx.max_epochs // 5)
    return MedianPruner(n_startup_trials=max(2, min(5, ctx.trials // 4)), n_warmup_steps=warmup)


def _hyperband(ctx: PrunerContext) -> BasePruner:
    from optuna.pruners import HyperbandPruner

    return HyperbandPruner(min_resource=1, max_resource=max(ctx.max_epochs, 2), reduction_factor=3)


PRUNERS.register("none", Pruner("no pruning: every trial runs all its epochs", _none))
PRUNERS.register("median", Pruner("stop a trial below the median of earlier trials at the same epoch", _median))
PRUNERS.register("hyperband", Pruner("successive halving over several budgets of epochs (Hyperband)", _hyperband))

"""Optimizers and learning-rate schedules, by name."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kennel.config import OptimConfig
from kennel.registry import Registry

OPTIMIZERS: Registry[Callable[[list[dict], OptimConfig], torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("adamw", lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay))
OPTIMIZERS.register(
    "sgd",
    lambda groups, cfg: torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
    ),
)


def param_groups(head: list[torch.nn.Parameter], backbone: list[torch.nn.Parameter], cfg: OptimConfig) -> list[dict]:
    """The new head learns at ``lr``; pretrained backbone stages at ``lr * backbone_lr_scale``."""
    groups = [{"params": head, "lr": cfg.lr, "name": "head"}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale, "name": "backbone"})
    return groups


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(groups, cfg)


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


SCHEDULES: Registry[Callable[[float], float]] = Registry("schedule")
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("constant", lambda progress: 1.0)


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_epochs``, then the named schedule over the remaining steps (per step)."""
    total = max(steps_per_epoch * epochs, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    shape = SCHEDULES.get(cfg.schedule)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return shape((step - warmup) / max(total - warmup, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

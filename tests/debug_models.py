"""Tiny models and data for the debugger tests: a healthy run, and one broken on purpose for each rule."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kennel.debugger.config import DebugConfig
from kennel.debugger.hooks import Debugger
from kennel.engine import LoopConfig, Observer, Trainer

QUIET = {name: {"stop": False} for name in ("ExplodingTensor", "LossNotDecreasing")}


def images(n: int = 600, classes: int = 3, normalised: bool = True, seed: int = 0) -> TensorDataset:
    """Learnable 3x8x8 "images": each class shifts its own channel. Normalised: about mean 0, std 1."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 8, 8, generator=generator)
    x[torch.arange(n), y] += 1.0
    x -= 1.0 / 3  # one channel in three is shifted up: the batch mean stays 0
    if not normalised:
        x = torch.rand(n, 3, 8, 8, generator=generator)  # pixels in [0, 1], the mistake CheckInputImages catches
        x[torch.arange(n), y] *= 0.5
    return TensorDataset(x, y)


def vectors(n: int = 600, classes: int = 3, dim: int = 8, seed: int = 0, labels: torch.Tensor | None = None):
    generator = torch.Generator().manual_seed(seed)
    y = labels if labels is not None else torch.arange(n) % classes
    x = torch.randn(len(y), dim, generator=generator)
    x[torch.arange(len(y)), y] += 2.0
    return TensorDataset(x, y)


def healthy_model() -> nn.Module:
    """A conv layer with a ReLU, a tanh layer and a linear head: every activation rule has something to judge."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3),
    )  # fmt: skip


def mlp(dim: int = 8, hidden: int = 16, classes: int = 3, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, hidden), activation(), nn.Linear(hidden, hidden), activation(),
                         nn.Linear(hidden, classes))  # fmt: skip


def fit(
    folder: Path,
    model: nn.Module,
    train: TensorDataset,
    valid: TensorDataset | None = None,
    epochs: int = 2,
    lr: float = 0.05,
    optimizer: str = "sgd",
    batch_size: int = 32,
    preset: str = "full",
    rules: dict | None = None,
    observers: tuple[Observer, ...] = (),
    params=None,
    debugger: Debugger | None = None,
):
    """Train with a :class:`Debugger` in ``folder`` (``debugger``, made by the caller, or one with ``preset`` and
    ``rules``); returns ``(loop state, debugger)``."""
    if debugger is None:
        debugger = Debugger(folder, DebugConfig(preset=preset, rules={**QUIET, **(rules or {})}))
    params = list(model.parameters()) if params is None else params
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    trainer = Trainer(
        model, make(params, lr=lr), LoopConfig(epochs=epochs, device=torch.device("cpu")), [debugger, *observers]
    )
    valid_loader = DataLoader(valid, batch_size=batch_size) if valid is not None else None
    state = trainer.fit(DataLoader(train, batch_size=batch_size, shuffle=False), valid_loader)
    return state, debugger


def fired(debugger: Debugger) -> set[str]:
    return set(debugger.runner.fired)

"""The logistic-regression head: fitted with L-BFGS on (toy) features, its L2 strength chosen on valid, folded back
to raw features, and kept by a job only where it is asked for or clearly better on valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from kennel.heads import clearly_better, fit_logistic, load_into
from kennel.job import train


def blobs(n: int, seed: int, scale: float = 40.0, shift: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 8-dimensional points, on a scale and offset far from standardised."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.eye(3, 8) * 2.5
    points = centres[labels] + torch.randn(n, 8, generator=generator)
    return points * scale + shift, labels


def test_a_fit_separates_the_classes_and_applies_to_raw_features() -> None:
    train_x, train_y = blobs(300, seed=0)
    valid_x, valid_y = blobs(150, seed=1)
    fit = fit_logistic(train_x, train_y, valid_x, valid_y, classes=3)
    assert fit.valid_accuracy > 0.9
    raw = (valid_x @ fit.weight.T + fit.bias).argmax(1)  # the folded weights, on features as they come
    assert float((raw == valid_y).float().mean()) == pytest.approx(fit.valid_accuracy)
    head = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(8, 3)).eval()
    load_into(head, fit)
    assert torch.equal(head(valid_x).argmax(1), raw)


def test_the_l2_strength_is_the_one_with_the_lowest_valid_loss() -> None:
    train_x, train_y = blobs(60, seed=2)
    valid_x, valid_y = blobs(300, seed=3)
    grid = (1.0, 1e-1, 1e-2, 1e-3)
    chosen = fit_logistic(train_x, train_y, valid_x, valid_y, classes=3, grid=grid)
    losses = {l2: fit_logistic(train_x, train_y, valid_x, valid_y, 3, grid=(l2,)).valid_loss for l2 in grid}
    assert chosen.l2 == min(losses, key=losses.get)


def test_clearly_better_needs_more_than_chance() -> None:
    labels = torch.zeros(100, dtype=torch.long)
    old = torch.ones(100, dtype=torch.long)
    old[:50] = 0  # right on the first 50
    a_few = old.clone()
    a_few[50:56] = 0  # six more right, four fewer: within chance
    a_few[:4] = 1
    many = old.clone()
    many[50:70] = 0  # twenty more right
    assert clearly_better(a_few, old, labels) == (False, {"wins": 6.0, "losses": 4.0})
    assert clearly_better(many, old, labels)[0]
    assert not clearly_better(old, many, labels)[0]


@pytest.mark.parametrize("head", ["lbfgs", "sgd"])
def test_a_job_keeps_the_head_it_was_asked_for_and_says_so(dataset: Path, head: str) -> None:
    record = train(tiny_config(dataset, epochs=2, head=head), stream=None)
    assert record.status == "completed"
    if head == "sgd":
        assert "head" not in record.params and "lbfgs_valid_accuracy" not in record.metrics
    else:
        assert record.params["head"] == "lbfgs"
        assert record.metrics["head_valid_accuracy"] == record.metrics["lbfgs_valid_accuracy"]
        assert record.metrics["lbfgs_l2"] > 0


def test_best_keeps_the_loop_head_unless_the_other_is_clearly_better(dataset: Path) -> None:
    record = train(tiny_config(dataset, epochs=2), stream=None)  # head: best, the default
    wins, losses = record.metrics["lbfgs_valid_wins"], record.metrics["lbfgs_valid_losses"]
    expected = "lbfgs" if wins - losses > (wins + losses) ** 0.5 else "sgd"
    assert record.params["head"] == expected

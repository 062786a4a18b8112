"""A second way to fit the head on cached features: multinomial logistic regression solved with L-BFGS, its L2
strength chosen on the valid split. On frozen features this is the classic linear probe; it finds the optimum
the loop's SGD head only approaches, and its one setting is picked by valid accuracy, never by test."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from kennel.models.classifier import Standardise

log = logging.getLogger(__name__)

# From strong to weak: each fit starts from the one before (a warm start), so the path costs little more than
# its weakest fit. Per sample: the loss is the mean cross-entropy plus l2 / 2 * ||W||^2.
L2_GRID = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
PAST_THE_BEST = 2  # weaker fits in a row whose valid loss is above the best: the path has passed its minimum
MAX_ITER = 200


@dataclass(frozen=True)
class LogisticFit:
    weight: torch.Tensor  # [classes, features], for raw (not standardised) features
    bias: torch.Tensor  # [classes]
    l2: float
    valid_accuracy: float
    valid_loss: float
    seconds: float
    valid_predictions: torch.Tensor  # the class each valid sample is given


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, start: nn.Linear | None) -> nn.Linear:
    linear = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        if start is None:
            linear.weight.zero_()
            linear.bias.zero_()
        else:
            linear.load_state_dict(start.state_dict())
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(x), y) + 0.5 * l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear


def fit_logistic(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    classes: int,
    grid: tuple[float, ...] = L2_GRID,
) -> LogisticFit:
    """The logistic regression of ``train`` whose L2 strength has the lowest loss on ``valid`` (the loss, not the
    accuracy: on a few hundred photos accuracy moves in steps of one photo, the loss smoothly).
    Features are standardised for the solver (each dimension to mean 0, std 1); the weights returned are folded
    back, so they apply to the raw features the head sees."""
    started = time.perf_counter()
    train_x, valid_x = train_x.float(), valid_x.float()
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, vs = (train_x - mean) / std, (valid_x - mean) / std
    best: tuple[tuple[float, float], float, nn.Linear, torch.Tensor] | None = None
    previous, worse = None, 0
    with torch.enable_grad():
        for l2 in grid:
            previous = _fit(xs, train_y, classes, l2, previous)
            with torch.no_grad():
                logits = previous(vs)
                accuracy = float((logits.argmax(1) == valid_y).float().mean())
                loss = float(nn.functional.cross_entropy(logits, valid_y))
            log.info("logistic head, l2 %g: valid accuracy %.4f, loss %.4f", l2, accuracy, loss)
            score = (-loss, accuracy)
            if best is None or score > best[0]:
                best, worse = (score, l2, _copy(previous), logits.argmax(1)), 0
            else:
                worse += 1
                if worse == PAST_THE_BEST:
                    break
    (negative_loss, accuracy), l2, linear, predictions = best
    weight = linear.weight.detach() / std
    bias = linear.bias.detach() - weight @ mean
    seconds = round(time.perf_counter() - started, 3)
    return LogisticFit(weight, bias, l2, accuracy, -negative_loss, seconds, predictions)


def clearly_better(new: torch.Tensor, old: torch.Tensor, labels: torch.Tensor) -> tuple[bool, dict[str, float]]:
    """Whether predictions ``new`` beat ``old`` on the same photos by more than chance: of the photos only one
    gets right, ``new`` must win more than one standard deviation (the square root of their number) more often
    than ``old``, as in McNemar's test. A difference of a photo or two on a small valid split is noise."""
    new_right, old_right = new == labels, old == labels
    wins, losses = int((new_right & ~old_right).sum()), int((old_right & ~new_right).sum())
    better = wins - losses > (wins + losses) ** 0.5
    return better, {"wins": float(wins), "losses": float(losses)}


def _copy(linear: nn.Linear) -> nn.Linear:
    copy = nn.Linear(linear.in_features, linear.out_features)
    copy.load_state_dict(linear.state_dict())
    return copy


def load_into(head: nn.Module, fit: LogisticFit) -> None:
    """Put ``fit`` into the classifier's head (its last layer is the linear one; dropout is off at inference).
    Where the head standardises its input first, the weights are moved to the standardised features:
    w·x + b = (w·std)·((x - mean) / std) + (b + w·mean)."""
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    weight, bias = fit.weight, fit.bias
    standardise = next((m for m in head.modules() if isinstance(m, Standardise)), None)
    if standardise is not None:
        bias = bias + weight @ standardise.mean
        weight = weight * standardise.std
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight))
        linear.bias.copy_(bias.to(linear.bias))

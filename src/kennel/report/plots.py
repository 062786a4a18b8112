"""Figures for the report as base64 PNG strings. matplotlib is imported lazily and used without pyplot
(a ``Figure`` on an Agg canvas), so rendering touches no global backend and works in any thread."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def new_figure(width: float, height: float, **kwargs: Any):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def png_base64(png: bytes) -> str:
    """PNG bytes as the text a page's ``<img src="data:image/png;base64,...">`` takes."""
    return base64.b64encode(png).decode("ascii")


def figure_png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return png_base64(buffer.getvalue())


def image_png(image) -> str:
    """A PIL image (a photo, an overlay) as base64 PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return png_base64(buffer.getvalue())


def integer_ticks(ax, axis: str = "x") -> None:
    """Ticks at whole numbers only, for axes that count steps, epochs or trials (one tick where the axis holds
    one whole number: a job of one epoch has epoch 1, not 0.96 to 1.04)."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _series(records: Sequence[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(r[x], r[y]) for r in records if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def curves_png(epochs: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]) -> str:
    """Loss and accuracy per epoch, and the per-step loss with the learning rate."""
    panels = (2 if epochs else 0) + (1 if steps else 0)
    figure = new_figure(5.2 * panels, 3.8)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if epochs:
        loss, accuracy = axes[0], axes[1]
        for key, label in (("train_loss", "train"), ("valid_loss", "valid")):
            loss.plot(*_series(epochs, "epoch", key), marker="o", label=label)
        loss.set(title="loss per epoch", xlabel="epoch", ylabel="cross-entropy")
        for key, label in (
            ("train_accuracy", "train top-1"),
            ("valid_accuracy", "valid top-1"),
            ("valid_top5", "valid top-5"),
        ):
            accuracy.plot(*_series(epochs, "epoch", key), marker="o", label=label)
        accuracy.set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
        for ax in (loss, accuracy):
            ax.legend()
            ax.grid(alpha=0.3)
            integer_ticks(ax)
    if steps:
        ax = axes[-1]
        ax.plot(*_series(steps, "global_step", "train_loss"), lw=1, color="tab:blue", label="train loss")
        ax.set(title="logged steps", xlabel="step", ylabel="train loss")
        ax.grid(alpha=0.3)
        integer_ticks(ax)
        steps_x, lrs = _series(steps, "global_step", "lr")
        if lrs:
            twin = ax.twinx()
            twin.plot(steps_x, lrs, lw=1, color="tab:orange", label="learning rate")
            twin.set_ylabel("learning rate", color="tab:orange")
    figure.tight_layout()
    return figure_png(figure)


def confused_classes(confusion: np.ndarray, limit: int) -> list[int]:
    """The ``limit`` classes most involved in mistakes (as true or predicted class), in class order."""
    if len(confusion) <= limit:
        return list(range(len(confusion)))
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    involvement = off.sum(axis=0) + off.sum(axis=1)
    return sorted(np.argsort(-involvement, kind="stable")[:limit].tolist())


def confusion_png(confusion: np.ndarray, class_names: Sequence[str], classes: Sequence[int]) -> str:
    """Heatmap of the share of each true class (row) predicted as each class (column), for ``classes``."""
    sub = confusion[np.ix_(classes, classes)].astype(np.float64)
    support = confusion[classes].sum(axis=1, keepdims=True).astype(np.float64)
    rates = np.divide(sub, support, out=np.zeros_like(sub), where=support > 0)
    n = len(classes)
    side = min(max(4.0, 0.32 * n + 2.5), 22.0)
    figure = new_figure(side + 1.5, side)
    ax = figure.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = [_short(class_names[i]) for i in classes]
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    if n <= 30:
        for (row, col), count in np.ndenumerate(sub):
            if count:
                color = "white" if rates[row, col] > 0.5 else "black"
                ax.text(col, row, str(int(count)), ha="center", va="center", fontsize=7, color=color)
    figure.colorbar(image, ax=ax, fraction=0.04, label="share of the true class")
    figure.tight_layout()
    return figure_png(figure)


def _short(name: str, limit: int = 30) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def thumbnail_png(image, size: int = 128) -> str:
    """A small PNG of a decoded photo, at most ``size`` pixels long; the photo itself is left as it is."""
    small = image.copy()
    small.thumbnail((size, size))
    return image_png(small)

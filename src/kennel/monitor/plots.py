"""The monitor page's figures: each quantity's distribution on the valid photos and in traffic, drawn on the axes
a rule's ``plot`` is given (:mod:`kennel.report.plots` makes the figure and embeds it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

VALID, TRAFFIC = "tab:blue", "tab:orange"
MAX_BARS = 40  # histogram bars: enough to show a shape, few enough to read on a few hundred photos


def _edges(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if low == high:  # one value on both sides: a bar around it
        return np.array([low - 0.5, high + 0.5])
    count = int(np.clip(np.sqrt(len(values)), 10, MAX_BARS))
    return np.linspace(low, high, count + 1)


def numeric(
    ax, reference: np.ndarray, traffic: np.ndarray, quantity: str, show: Callable[[float], str] = "{:.2f}".format
) -> None:
    """Both sides' histograms as shares of their photos, over one set of bars, with each side's median."""
    edges = _edges(np.concatenate([reference, traffic]))
    for values, colour, side in ((reference, VALID, "valid"), (traffic, TRAFFIC, "traffic")):
        median = float(np.median(values))
        ax.hist(
            values,
            bins=edges,
            weights=np.full(len(values), 1 / len(values)),
            histtype="stepfilled",
            alpha=0.35,
            color=colour,
            edgecolor=colour,
            label=f"{side}: {len(values)} photos, median {show(median)}",
        )
        ax.axvline(median, color=colour, linestyle="--", linewidth=1.2)
    ax.set(xlabel=quantity, ylabel="share of photos")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def shares(ax, categories: Sequence[str], reference: np.ndarray, traffic: np.ndarray, quantity: str) -> None:
    """Each category's share of the photos on both sides, side by side."""
    x = np.arange(len(categories))
    ax.bar(x - 0.2, reference, 0.4, color=VALID, label="valid")
    ax.bar(x + 0.2, traffic, 0.4, color=TRAFFIC, label="traffic")
    turned = len(categories) > 4  # long class names side by side would overlap
    ax.set_xticks(x, [str(c) for c in categories], rotation=30 if turned else 0, ha="right" if turned else "center")
    top = 1.05 * max(1e-9, reference.max(), traffic.max())
    ax.set(xlabel=quantity, ylabel="share of photos", xlim=(-0.7, len(categories) - 0.3), ylim=(0, top))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")

"""How far one quantity has drifted between two samples: the population stability index (PSI), and how often a
PSI that large comes from chance alone.

PSI = sum over bins of (t - r) * ln(t / r), with r and t the reference's and the traffic's share of a bin. Its
usual reading: under 0.1 no drift, 0.1 to 0.25 moderate, over 0.25 major. That reading holds for samples of
thousands. On a few hundred photos sampling noise alone inflates it: two samples of one set, of n and m photos
over k bins, score about (k - 1)(1/n + 1/m) on average, 0.12 for two halves of 300 photos over 10 bins. So a
rule calls drift only where the PSI is past its threshold *and* a permutation test finds that two samples of one
population rarely score that high: the test deals the pooled photos out to the two sides again and again and
recomputes the statistic, bins and all, so it holds at any sample size, binning and smoothing. Bins are fewer
for small samples, so that each holds about :data:`PER_BIN` photos of the smaller side, and the PSI stays
readable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_BINS = 10  # the customary PSI binning: deciles of the reference
PER_BIN = 10  # photos of the smaller sample per bin, at least: fewer bins for small samples
SMOOTHING = 0.5  # half a photo added to every bin of both sides: an empty bin gets a small share, not ln(0)
PERMUTATIONS = 999  # enough for a p-value of 0.001; the test costs about a second per rule
MAX_TESTED = 2000  # photos a side that the permutation test deals out; more would add time, not certainty
OTHER = "(other)"  # the category of the classes that do not get one of their own

Statistic = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Drift:
    """The PSI of traffic against reference over ``bins`` bins, and the permutation test's p-value: the chance
    that two samples of one population, of these sizes, score at least this PSI."""

    psi: float
    p_value: float
    bins: int
    reference: int  # photos (valid) and lines (traffic) compared
    traffic: int


def bins_for(reference: int, traffic: int) -> int:
    """Bins for samples of these sizes: :data:`MAX_BINS`, fewer when the smaller has under PER_BIN photos a bin."""
    return int(np.clip(min(reference, traffic) // PER_BIN, 2, MAX_BINS))


def shares(counts: np.ndarray) -> np.ndarray:
    return (counts + SMOOTHING) / (counts.sum() + SMOOTHING * len(counts))


def psi_of_counts(reference: np.ndarray, traffic: np.ndarray) -> float:
    """The PSI of two histograms over the same bins."""
    r, t = shares(reference), shares(traffic)
    return float(np.sum((t - r) * np.log(t / r)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Edges at the reference's ``bins``-quantiles, ties merged, plus one just below its minimum. Bins are
    right-closed: ``x < min``, ``[min, q1]``, ``(q1, q2]``, ..., ``> max``, so values below or above all the
    reference holds get a bin of their own, and so does a value it holds many times (every photo 48 px wide)."""
    cuts = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:]))
    return np.concatenate([[np.nextafter(cuts[0], -np.inf)], cuts])


def numeric_psi(bins: int) -> Statistic:
    """The PSI of two samples of a number, over ``bins`` quantile bins of the first (:func:`quantile_edges`)."""

    def statistic(reference: np.ndarray, traffic: np.ndarray) -> float:
        edges = quantile_edges(reference, bins)
        size = len(edges) + 1
        return psi_of_counts(
            np.bincount(np.searchsorted(edges, reference), minlength=size),
            np.bincount(np.searchsorted(edges, traffic), minlength=size),
        )

    return statistic


def categorical_psi(categories: int) -> Statistic:
    """The PSI of two samples of category codes ``0 .. categories - 1``."""

    def statistic(reference: np.ndarray, traffic: np.ndarray) -> float:
        return psi_of_counts(np.bincount(reference, minlength=categories), np.bincount(traffic, minlength=categories))

    return statistic


def top_categories(reference: Sequence[str], traffic: Sequence[str], most: int) -> list[str]:
    """The categories to compare: all when at most ``most``, else the ``most - 1`` most common in both samples
    together and :data:`OTHER` for the rest (ties in alphabetical order, so a run is repeatable)."""
    names, counts = np.unique(
        np.concatenate([np.asarray(reference, str), np.asarray(traffic, str)]), return_counts=True
    )
    if len(names) <= most:
        return [str(n) for n in names]
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
    return [str(names[i]) for i in order[: most - 1]] + [OTHER]


def codes(values: Sequence[str], categories: list[str]) -> np.ndarray:
    """Each value's index in ``categories``; a value not among them is :data:`OTHER`'s."""
    index = {name: i for i, name in enumerate(categories)}
    other = index.get(OTHER, len(categories) - 1)
    return np.array([index.get(str(v), other) for v in values], dtype=np.intp)


def drift(
    reference: np.ndarray,
    traffic: np.ndarray,
    statistic: Statistic,
    bins: int,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> Drift:
    """``statistic`` of the two samples, and its permutation test (at most :data:`MAX_TESTED` photos a side,
    drawn at random, take part: the PSI itself is of every photo)."""
    from scipy.stats import permutation_test

    rng = np.random.default_rng(seed)
    psi = statistic(reference, traffic)
    tested = [
        side if len(side) <= MAX_TESTED else rng.choice(side, MAX_TESTED, replace=False)
        for side in (reference, traffic)
    ]
    test = permutation_test(
        tested,
        statistic,
        permutation_type="independent",
        vectorized=False,
        n_resamples=permutations,
        alternative="greater",
        rng=rng,
    )
    return Drift(psi, float(test.pvalue), bins, len(reference), len(traffic))

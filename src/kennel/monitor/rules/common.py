"""What the monitor's rules share: their registry, and the two kinds of drift they judge, of a number (the top
probability, the brightness) and of a category (the top class, dog or no dog). A rule says which values of a
:class:`~kennel.monitor.sample.Sample` it compares and how to put a drift in words; the judging is here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from kennel.findings import Finding
from kennel.monitor import plots
from kennel.monitor.comparison import Comparison
from kennel.monitor.drift import (
    PERMUTATIONS,
    Drift,
    bins_for,
    categorical_psi,
    codes,
    drift,
    numeric_psi,
    top_categories,
)
from kennel.monitor.sample import Sample
from kennel.rules import Rule, RuleRegistry

MONITOR_RULES = RuleRegistry("monitor rule", "monitor.rules")


@dataclass
class DriftRule(Rule[Comparison]):
    """A drift of one quantity from the valid photos to the traffic (see :mod:`kennel.monitor.drift`)."""

    moderate: float = 0.1  # the PSI from which drift is called (moderate), when the permutation test agrees
    major: float = 0.25  # the PSI past which it is called major
    # The permutation test's p-value under which a PSI is taken for more than chance. With five rules, two samples
    # of one set raise an issue in any of them at most about 5% of the time.
    alpha: float = 0.01
    min_lines: int = 30  # photos on each side below which the rule does not judge
    permutations: int = PERMUTATIONS
    seed: int = 0

    quantity: ClassVar[str] = ""  # what is compared, in words: "top probability"

    def sides(self, comparison: Comparison) -> tuple[np.ndarray, np.ndarray]:
        """The values compared, of the valid photos and of the traffic."""
        raise NotImplementedError

    def measure(self, reference: np.ndarray, traffic: np.ndarray) -> tuple[Drift, dict[str, float]]:
        """The drift, and the numbers a finding shows beside its PSI."""
        raise NotImplementedError

    def explain(self, reference: np.ndarray, traffic: np.ndarray, found: Drift) -> tuple[str, str]:
        """What was seen and what to do, for a drift that is real."""
        raise NotImplementedError

    def severity(self, psi: float) -> str:
        return "major" if psi > self.major else "moderate"

    def check(self, comparison: Comparison) -> Finding:
        reference, traffic = self.sides(comparison)
        sizes = {"photos": len(reference), "lines": len(traffic)}
        if len(reference) < self.min_lines:
            return self.no_data(
                comparison,
                f"the valid split gives {len(reference)} photos with a {self.quantity}; the rule judges from "
                f"{self.min_lines}",
                **sizes,
            )
        if len(traffic) < self.min_lines:
            return self.no_data(
                comparison,
                f"the capture has {len(traffic)} lines with a {self.quantity}; the rule judges from "
                f"{self.min_lines}: capture more traffic",
                **sizes,
            )
        found, shown = self.measure(reference, traffic)
        numbers = {"psi": found.psi, "p_value": found.p_value, "bins": found.bins, **sizes, **shown}
        if found.psi >= self.moderate and found.p_value < self.alpha:
            message, advice = self.explain(reference, traffic, found)
            return self.issue(comparison, message, advice, **numbers)
        return self.fine(comparison, **numbers)


@dataclass
class NumericDrift(DriftRule):
    """A number per photo, compared over quantile bins of the valid photos; said by its medians."""

    lower: ClassVar[tuple[str, str]] = ("", "")  # what was seen, and what to do, when the traffic's median is lower
    higher: ClassVar[tuple[str, str]] = ("", "")  # and when it is higher
    unit: ClassVar[str] = ""  # after a value: " px"
    digits: ClassVar[int] = 2

    def values(self, sample: Sample) -> np.ndarray:
        raise NotImplementedError

    def show(self, value: float) -> str:
        return f"{value:.{self.digits}f}{self.unit}"

    def sides(self, comparison: Comparison) -> tuple[np.ndarray, np.ndarray]:
        reference, traffic = self.values(comparison.reference), self.values(comparison.traffic)
        return reference[np.isfinite(reference)], traffic[np.isfinite(traffic)]

    def measure(self, reference, traffic):
        bins = bins_for(len(reference), len(traffic))
        found = drift(reference, traffic, numeric_psi(bins), bins, self.permutations, self.seed)
        return found, {"valid_median": float(np.median(reference)), "traffic_median": float(np.median(traffic))}

    def explain(self, reference, traffic, found):
        valid, now = float(np.median(reference)), float(np.median(traffic))
        seen, advice = self.lower if now < valid else self.higher
        said = f"the median {self.quantity} is {self.show(now)} in traffic vs {self.show(valid)} on valid"
        if now == valid:  # the same median, another spread: say where the middle half of each lies
            seen = f"The {self.quantity} is distributed differently than on the valid photos"
            (a, b), (c, d) = np.percentile(traffic, [25, 75]), np.percentile(reference, [25, 75])
            said = (
                f"the median is {self.show(now)} on both sides, but the middle half spans {self.show(a)} to "
                f"{self.show(b)} in traffic vs {self.show(c)} to {self.show(d)} on valid"
            )
            advice = f"see the {self.quantity} plot on the monitor page; if the traffic's photos differ from what the "
            advice += "model was trained on, add such photos to the training data"
        return f"{seen}: {said} (PSI {found.psi:.2f}, {self.severity(found.psi)} drift)", advice

    def plot(self, comparison, finding, ax):
        label = f"{self.quantity} ({self.unit.strip()})" if self.unit.strip() else self.quantity
        plots.numeric(ax, *self.sides(comparison), label, self.show)


class Focus(NamedTuple):
    """The category a finding speaks of (the one whose share moved most), with its share on valid and in traffic."""

    category: str
    valid: float
    traffic: float


@dataclass(frozen=True)
class FocusedDrift(Drift):
    """A drift of categories, with the category its finding speaks of (:meth:`CategoricalDrift.focus`)."""

    focus: Focus


Shares = tuple[list[str], np.ndarray, np.ndarray]  # the categories, and each one's share on valid and in traffic


def shares_of(names: list[str], reference_codes: np.ndarray, traffic_codes: np.ndarray) -> Shares:
    """The share of each of ``names`` among the valid photos' codes and among the traffic's."""
    count = len(names)
    valid = np.bincount(reference_codes, minlength=count) / max(1, len(reference_codes))
    now = np.bincount(traffic_codes, minlength=count) / max(1, len(traffic_codes))
    return names, valid, now


@dataclass
class CategoricalDrift(DriftRule):
    """A category per photo, compared by share; said by the category whose share moved most. Categories are as
    many as bins would be (:func:`~kennel.monitor.drift.bins_for`): the rarest are pooled."""

    def values(self, sample: Sample) -> np.ndarray:
        raise NotImplementedError

    def sides(self, comparison: Comparison) -> tuple[np.ndarray, np.ndarray]:
        return self.values(comparison.reference), self.values(comparison.traffic)

    def categories(self, reference: np.ndarray, traffic: np.ndarray) -> list[str]:
        return top_categories(reference, traffic, bins_for(len(reference), len(traffic)))

    def shares(self, reference, traffic) -> Shares:
        names = self.categories(reference, traffic)
        return shares_of(names, codes(reference, names), codes(traffic, names))

    def focus(self, reference, traffic, shares: Shares | None = None) -> Focus:
        """The category a finding speaks of, with its shares; ``shares`` are :meth:`shares` of these sides, when
        already known."""
        names, valid, now = shares if shares is not None else self.shares(reference, traffic)
        most = int(np.argmax(np.abs(now - valid)))
        return Focus(names[most], float(valid[most]), float(now[most]))

    def measure(self, reference, traffic):
        names = self.categories(reference, traffic)
        count = len(names)
        reference_codes, traffic_codes = codes(reference, names), codes(traffic, names)
        found = drift(reference_codes, traffic_codes, categorical_psi(count), count, self.permutations, self.seed)
        focus = self.focus(reference, traffic, shares_of(names, reference_codes, traffic_codes))
        return FocusedDrift(**vars(found), focus=focus), {"valid_share": focus.valid, "traffic_share": focus.traffic}

    def show(self, category: str, share: float) -> str:
        return f"{category}: {share:.0%}"

    def plot(self, comparison, finding, ax):
        plots.shares(ax, *self.shares(*self.sides(comparison)), self.quantity)

"""Figures of the profiler report, and the drawing helpers the rules use for their evidence. Times are seconds
since the job started; durations are milliseconds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from kennel.engine.clock import PHASES
from kennel.profiler.profile import Profile
from kennel.report.plots import figure_png, new_figure

MAX_POINTS = 2000  # longer series are averaged into this many bins before drawing
PHASE_COLORS = {
    "data": "tab:orange",
    "transfer": "tab:purple",
    "forward": "tab:blue",
    "backward": "tab:green",
    "optimizer": "tab:red",
    "other": "tab:gray",
    "between steps": "tab:olive",
}
SHADES = {"initialization": "#f2e6ff", "finalization": "#e6f2ff"}


def binned(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` averaged into at most ``limit`` bins of consecutive points."""
    if len(x) <= limit:
        return x, y
    bins = list(itertools.pairwise(np.linspace(0, len(x), limit + 1).astype(int)))
    means = [np.nanmean(y[a:b]) if np.isfinite(y[a:b]).any() else np.nan for a, b in bins]
    return np.array([x[a:b].mean() for a, b in bins]), np.array(means)


def seconds(profile: Profile, times: np.ndarray) -> np.ndarray:
    return times - (profile.started or (times[0] if len(times) else 0.0))


def shade_phases(ax: Any, profile: Profile) -> None:
    """Tint initialization and finalization behind a time series, so the training loop stands out."""
    start = profile.started or 0.0
    labelled = set()
    for phase, begin, end in profile.job_phases():
        if phase in SHADES:
            label = phase if phase not in labelled else None
            ax.axvspan(begin - start, end - start, color=SHADES[phase], zorder=0, label=label)
            labelled.add(phase)


def thresholds(ax: Any, lines: dict[str, float]) -> None:
    for label, value in lines.items():
        ax.axhline(value, color="tab:red", ls="--", lw=1, label=label)


def series(ax: Any, profile: Profile, values: dict[str, np.ndarray], ylabel: str, lines: dict[str, float] = {}):  # noqa: B006
    """System metrics over the job's time, with its phases shaded and threshold lines."""
    shade_phases(ax, profile)
    t = seconds(profile, profile.sample_times)
    for label, y in values.items():
        ax.plot(*binned(t, np.asarray(y, dtype=np.float64)), lw=1, label=label)
    thresholds(ax, lines)
    ax.set(xlabel="seconds since the job started", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def gpu_lines(profile: Profile, metric: str) -> dict[str, np.ndarray]:
    matrix = profile.gpu_series(metric)
    return {f"GPU {i} {metric}": matrix[:, i] for i in range(matrix.shape[1])}


def step_points(
    ax: Any,
    profile: Profile,
    column: str = "busy",
    marked: np.ndarray | None = None,
    lines: dict[str, float] = {},  # noqa: B006
    color: str = "tab:blue",
) -> None:
    """One point per training step (milliseconds), ``marked`` steps in red, threshold lines in milliseconds."""
    table = profile.step_table
    x, y = table["step"], table[column] * 1000
    ax.plot(*binned(x, y), ".", ms=3, color=color, label=f"{column} (ms)")
    if marked is not None and marked.any():
        ax.plot(x[marked], y[marked], "o", ms=6, mfc="none", color="tab:red", label="flagged steps")
    thresholds(ax, {k: v * 1000 for k, v in lines.items()})
    ax.set(xlabel="global step", ylabel="milliseconds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def phase_bars(ax: Any, profile: Profile, limit: float | None = None) -> None:
    """The job's initialization, training and finalization as one horizontal bar per phase (seconds)."""
    totals = profile.phase_seconds()
    names = list(totals)
    ax.barh(names, [totals[n] for n in names], color=["tab:purple", "tab:blue", "tab:cyan"])
    if limit is not None:
        ax.axvline(limit, color="tab:red", ls="--", lw=1, label=f"limit {limit:g} s")
        ax.legend(fontsize=8)
    ax.set(xlabel="seconds")
    ax.invert_yaxis()


# --- the report's own figures ---------------------------------------------------------------------------------


def system_png(profile: Profile) -> str:
    """CPU, memory and (on GPU jobs) GPU utilisation over the job's time."""
    gpu = profile.gpu_count > 0
    figure = new_figure(11, 6.6 if gpu else 4.4)
    axes = figure.subplots(3 if gpu else 2, 1, sharex=True, squeeze=False)[:, 0]
    series(
        axes[0],
        profile,
        {
            "CPU, mean of cores": profile.series("cpu"),
            "busiest core": profile.series("cpu_max"),
            "I/O wait": profile.series("iowait"),
        },
        "percent",
    )
    series(axes[1], profile, {"machine memory": profile.series("mem")}, "percent")
    twin = axes[1].twinx()
    twin.plot(seconds(profile, profile.sample_times), profile.series("proc_rss_mb"), color="tab:brown", lw=1)
    twin.set_ylabel("job processes (MB)", color="tab:brown")
    if gpu:
        series(axes[2], profile, {**gpu_lines(profile, "util"), **gpu_lines(profile, "mem")}, "percent")
    figure.tight_layout()
    return figure_png(figure)


def framework_png(totals: dict[str, float]) -> str:
    """The training loop's time by phase, as one stacked bar of shares."""
    figure = new_figure(9, 1.6)
    ax = figure.subplots()
    whole = sum(totals.values()) or 1.0
    left = 0.0
    for name, value in totals.items():
        share = value / whole
        ax.barh([0], [share], left=left, color=PHASE_COLORS.get(name, "tab:gray"), label=f"{name} {share:.0%}")
        left += share
    ax.set(xlim=(0, 1), yticks=[], xlabel="share of the training loop's step time")
    ax.legend(ncol=7, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.tight_layout()
    return figure_png(figure)


def steps_png(profile: Profile, marked: Sequence[int] = ()) -> str:
    """Each step's time over the run, stacked by phase (milliseconds), with ``other`` (observers) on top."""
    table = profile.step_table
    figure = new_figure(11, 3.8)
    ax = figure.subplots()
    x = table["step"]
    bottom = np.zeros(len(binned(x, x)[0]))
    for name in (*PHASES, "other"):
        bx, by = binned(x, np.nan_to_num(table[name]) * 1000)
        ax.fill_between(bx, bottom, bottom + by, step="mid", color=PHASE_COLORS[name], alpha=0.8, lw=0, label=name)
        bottom = bottom + by
    if len(marked):
        rows = np.isin(x, list(marked))
        ax.plot(x[rows], table["wall"][rows] * 1000, "v", color="black", ms=6, label="outlier")
    ax.set(xlabel="global step", ylabel="milliseconds per step", ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(ncol=7, fontsize=8, loc="upper right")
    figure.tight_layout()
    return figure_png(figure)


def rule_png(rule: Any, profile: Profile, finding: Any) -> str | None:
    """The evidence of a rule that fired, drawn by the rule itself; None for a rule that draws none."""
    figure = new_figure(10, 3.4)
    ax = figure.subplots()
    try:
        rule.plot(profile, finding, ax)
    except NotImplementedError:  # a custom rule need not draw
        return None
    ax.set_title(f"{rule.name}: {finding.status}", fontsize=10)
    figure.tight_layout()
    return figure_png(figure)

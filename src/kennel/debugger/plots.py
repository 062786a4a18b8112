"""The debugger report's figures, each with a caption that says what was recorded: every step's loss, and the
tensors of the steps the capture saved (a job stopped early may have saved one). Every figure spans the
training steps the job ran, so one saved step shows where it lies in the job, not alone on an empty axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kennel.debugger.config import Capture, DebugConfig
from kennel.debugger.store import DebugRecords
from kennel.report.data import MissingInput
from kennel.report.plots import figure_png, integer_ticks, new_figure

MAX_LINES = 12  # layers drawn per plot: the ones with the largest values
RULE_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")  # rules that fired
FEW_SAVES = 10  # below this many saved steps the caption says how to save more
MARKERS_UNDER = 80  # points per line below which each point is marked (a line of one point draws nothing)


@dataclass
class DebugPage:
    """What the debugger's report draws from: the records, and the capture the job ran with (None when the job
    folder has no readable config, e.g. records written outside a job)."""

    records: DebugRecords
    preset: str | None = None
    train: Capture | None = None

    @classmethod
    def load(cls, records: DebugRecords, job: dict[str, Any]) -> DebugPage:
        settings = (job.get("config") or {}).get("debug")
        if not isinstance(settings, dict):
            return cls(records)
        try:
            config = DebugConfig.model_validate(settings)
        except Exception:  # a config from another kennel version, or a rule module gone: say less, still draw
            return cls(records)
        return cls(records, config.preset, config.capture("TRAIN"))

    @property
    def train_steps(self) -> int | None:
        """How many training steps the job ran, when it kept every step's loss."""
        steps, _ = self.records.loss_curve("TRAIN")
        return int(steps.max()) + 1 if self.records.every_step_losses and len(steps) else None

    def span(self, ax) -> None:
        """Put the job's training steps on the x axis, in whole steps."""
        last = self.train_steps
        if last is not None:
            ax.set_xlim(-0.02 * last - 0.5, last - 0.5 + 0.02 * last)
        else:  # a job from before every step's loss was kept: at least the steps either side of what was saved
            low, high = ax.dataLim.intervalx
            if np.isfinite([low, high]).all() and high - low < 2:
                ax.set_xlim(low - 1, high + 1)
        integer_ticks(ax)

    def saved_caption(self) -> str:
        """Which TRAIN steps saved their tensors, why so few when they are, and how to save more."""
        saved = self.records.steps("TRAIN", "weights") or self.records.steps("TRAIN")
        ran = self.train_steps
        where = f"{len(saved)} of the {ran} training steps" if ran else f"{len(saved)} training step(s)"
        shown = ", ".join(map(str, saved[:8])) + (", …" if len(saved) > 8 else "")
        text = f"Tensors were saved at {where} (step {shown})" if saved else "No tensors were saved in TRAIN mode"
        if self.train is not None:
            text += f": the job saved them {_every(self.train.save_interval)} (debug.modes.TRAIN.save_interval)"
        text += "."
        if len(saved) < FEW_SAVES:
            text += (
                " To see more of the curve, save more often: --set debug.modes.TRAIN.save_interval=5, or --debug full."
            )
        return text

    def not_captured(self, collection: str) -> str:
        if self.train is not None and collection not in self.train.collections:
            preset = f"the {self.preset} preset" if self.preset else "the job's capture"
            return f"{collection} are not captured: {preset} leaves them out (--debug full captures them)"
        return f"no {collection} were captured in TRAIN mode"


def _every(interval: int) -> str:
    return "at every step" if interval == 1 else f"every {interval} steps"


def _style(count: int) -> dict[str, Any]:
    return {"marker": "o", "ms": 3} if count < MARKERS_UNDER else {}


def loss_figure(page: DebugPage) -> tuple[str, str]:
    """The loss over training steps with the steps where rules found issues, and its caption."""
    records = page.records
    train_x, train_y = records.loss_curve("TRAIN")
    eval_x, eval_y = records.loss_curve("EVAL")
    if not len(train_x) and not len(eval_x):
        raise MissingInput("no loss was recorded: the job ended before its first step, or captured no losses")
    figure = new_figure(8, 3.6)
    ax = figure.subplots()
    every = records.every_step_losses
    if len(train_x):
        label = "TRAIN, every step" if every else "TRAIN, saved steps"
        ax.plot(train_x, train_y, lw=1, color="tab:blue", label=label, **_style(len(train_x)))
    if len(eval_x):
        label = "EVAL, mean of each validation pass" if every else "EVAL, saved batches"
        ax.plot(eval_x, eval_y, lw=1, color="tab:orange", marker="o", ms=4, label=label)
    fired = [f for f in records.findings if f.fired and f.step is not None][: len(RULE_COLORS)]
    for finding, color in zip(fired, RULE_COLORS, strict=False):
        ax.axvline(finding.step, color=color, ls="--", lw=1, label=f"{finding.rule} (step {finding.step})")
    ax.set(title="loss", xlabel="training step", ylabel="loss")
    page.span(ax)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(figure), _loss_caption(page, train_x, eval_x, bool(fired))


def _loss_caption(page: DebugPage, train_x: np.ndarray, eval_x: np.ndarray, fired: bool) -> str:
    parts = []
    if page.records.every_step_losses:
        if len(train_x):
            parts.append(f"TRAIN: the loss of every step, {train_x[0]} to {train_x[-1]} ({len(train_x)} steps).")
        passes = f"each validation pass ({len(eval_x)})" if len(eval_x) != 1 else "its one validation pass"
        parts.append(f"EVAL: the mean loss of {passes}." if len(eval_x) else "EVAL: no validation pass ran.")
    else:
        parts.append(
            f"This job kept the loss of its saved steps only ({len(train_x)} TRAIN, {len(eval_x)} EVAL): it ran "
            "before kennel kept every step's; metrics.jsonl and the job report have its logged steps."
        )
    if fired:
        parts.append("Dashed lines: the steps where a rule found an issue.")
    return " ".join(parts)


def _lines(ax, records: DebugRecords, names: list[str], reduction: str, transform=None) -> int:
    """Draw one line per tensor, the ``MAX_LINES`` with the largest last value; returns how many exist."""
    series = []
    for name in names:
        steps, values = records.values(name, reduction)
        if transform is not None:
            values = transform(name, values)
        if len(values):
            series.append((np.nan_to_num(values[-1], nan=-np.inf), name, steps, values))
    for _, name, steps, values in sorted(series, key=lambda s: s[0], reverse=True)[:MAX_LINES]:
        ax.plot(steps, values, lw=1, label=name, **_style(len(steps)))
    if series:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return len(series)


def layer_figure(
    page: DebugPage,
    collection: str,
    reduction: str,
    title: str,
    ylabel: str,
    transform=None,
    only=None,
    log: bool = True,
) -> tuple[str, str]:
    """One line per layer of ``collection`` over the saved TRAIN steps, and the caption that says which."""
    records = page.records
    names = [n for n in records.tensor_names(collection, "TRAIN") if only is None or only(n)]
    if not names:
        raise MissingInput(page.not_captured(collection))
    figure = new_figure(8, 3.8)
    ax = figure.subplots()
    count = _lines(ax, records, names, reduction, transform)
    ax.set(
        title=title + (f" (the {MAX_LINES} largest of {count})" if count > MAX_LINES else ""),
        xlabel="training step",
        ylabel=ylabel,
    )
    page.span(ax)
    if log:
        ax.set_yscale("log")
    return figure_png(figure), page.saved_caption()


def update_ratio(records: DebugRecords):
    """Each weight's update norm over its own norm, at the saved steps."""

    def ratio(name: str, updates: np.ndarray) -> np.ndarray:
        _, norms = records.values(name, "norm")
        return updates / (norms + 1e-9)

    return ratio

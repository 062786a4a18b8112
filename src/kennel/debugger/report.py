"""The debugger's summary and report: the rules' statuses with their first findings, and plots of loss,
gradient norms, weight update ratios and activation zero fractions over steps (``debug/report.html``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kennel.debugger.store import FINDINGS, FOLDER, REPORT, RULES, DebugRecords, load_records, read_rule_statuses
from kennel.findings import NO_ISSUES, Finding, load_findings
from kennel.jobs.folder import JobDir
from kennel.report.data import MissingInput, ReportData
from kennel.report.plots import figure_png, new_figure
from kennel.report.section import Section, render_template, write_page
from kennel.report.sections import add_section

MAX_LINES = 12  # layers drawn per plot: the ones with the largest values


@dataclass(frozen=True)
class RuleSummary:
    """One line of the rules summary: a rule, its status, where it first fired and what it found."""

    rule: str
    status: str
    step: int | None = None
    mode: str | None = None
    finding: str = ""
    advice: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def rules_summary(folder: Path) -> tuple[list[RuleSummary], dict[str, str]]:
    """Rows of the rules summary of a ``debug`` folder and, per rule, why it could not judge (not applicable,
    no data), if so. A rule's row is its first issue, else its latest status: from ``findings.jsonl`` (appended
    as statuses change), else ``rules.json`` (rewritten at every epoch's end), so a killed job's summary still
    shows what happened after its last epoch."""
    rules = read_rule_statuses(folder)
    whys = {name: entry.get("why", "") for name, entry in rules.items()}
    verdicts: dict[str, Finding] = {}
    for finding in load_findings(folder / FINDINGS):
        if finding.rule not in verdicts or not verdicts[finding.rule].fired:
            verdicts[finding.rule] = finding
    rows = []
    for name in dict.fromkeys([*rules, *verdicts]):
        verdict = verdicts.get(name)
        if verdict is None:
            rows.append(RuleSummary(name, rules[name].get("status", NO_ISSUES)))
        elif verdict.fired:
            rows.append(RuleSummary(name, verdict.status, verdict.step, verdict.mode, verdict.message, verdict.advice))
        else:
            rows.append(RuleSummary(name, verdict.status))
            if rules.get(name, {}).get("status") != verdict.status:  # it changed after rules.json was written
                whys[name] = verdict.message
    return rows, whys


def rules_html(folder: Path, page: str | None = None) -> str:
    rows, whys = rules_summary(folder)
    issues = [f for f in load_findings(folder / FINDINGS) if f.fired]
    findings = sorted(issues, key=lambda f: (f.step is None, f.step or 0))
    return render_template("debugger_rules.html", rows=rows, whys=whys, findings=findings, page=page)


def report_section(data: ReportData) -> str:
    """The job report's debugger section: the rules summary, with a link to the plots when written."""
    folder = data.job_dir / FOLDER
    if not (folder / RULES).is_file() and not (folder / FINDINGS).is_file():
        raise MissingInput("no debugger output: the job ran with debug.preset off, or before its first epoch ended")
    page = f"{FOLDER}/{REPORT}" if (folder / REPORT).is_file() else None
    return rules_html(folder, page)


add_section(Section("debugger", "Debugger rules", report_section), before="test-metrics")


# --- plots -------------------------------------------------------------------------------------------


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
        ax.plot(steps, values, lw=1, label=name)
    if series:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return len(series)


def loss_plot(records: DebugRecords) -> str:
    figure = new_figure(8, 3.6)
    ax = figure.subplots()
    frame = records.frame[records.frame["collection"] == "losses"]
    if frame.empty:
        raise MissingInput("no losses captured")
    for mode, color in (("TRAIN", "tab:blue"), ("EVAL", "tab:orange")):
        losses = frame[frame["mode"] == mode].groupby("step")["mean"].mean()
        if len(losses):
            ax.plot(
                losses.index,
                losses.to_numpy(),
                lw=1,
                color=color,
                marker="o" if mode == "EVAL" else None,
                ms=3,
                label=f"{mode} (saved steps)",
            )
    ax.set(title="loss", xlabel="training step", ylabel="loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure_png(figure)


def layer_plot(
    records: DebugRecords,
    collection: str,
    reduction: str,
    title: str,
    ylabel: str,
    transform=None,
    only=None,
    log: bool = True,
) -> str:
    names = [n for n in records.tensor_names(collection, "TRAIN") if only is None or only(n)]
    if not names:
        raise MissingInput(f"no {collection} captured in TRAIN mode")
    figure = new_figure(8, 3.8)
    ax = figure.subplots()
    count = _lines(ax, records, names, reduction, transform)
    ax.set(
        title=title + (f" (the {MAX_LINES} largest of {count})" if count > MAX_LINES else ""),
        xlabel="training step",
        ylabel=ylabel,
    )
    if log:
        ax.set_yscale("log")
    return figure_png(figure)


def _update_ratio(records: DebugRecords):
    def ratio(name: str, updates: np.ndarray) -> np.ndarray:
        _, norms = records.values(name, "norm")
        return updates / (norms + 1e-9)

    return ratio


def write_debug_report(job_dir: Path | str) -> Path:
    """Write ``debug/report.html`` of a job folder and return its path."""
    job_dir = Path(job_dir)
    records = load_records(job_dir)
    folder = job_dir / FOLDER

    def plot(render, alt: str, note: str = ""):
        return lambda data: render_template("debugger_plot.html", png=render(data), alt=alt, note=note)

    sections = [
        Section("rules", "Rules summary", lambda _: rules_html(folder)),
        Section("loss", "Loss in TRAIN and EVAL", plot(loss_plot, "loss over steps")),
        Section(
            "gradients",
            "Gradient norm per layer",
            plot(lambda r: layer_plot(r, "gradients", "norm", "gradient L2 norm", "norm"), "gradient norms"),
        ),
        Section(
            "updates",
            "Weight update ratio",
            plot(
                lambda r: layer_plot(r, "weights", "update", "update / weight (L2 norms)", "ratio", _update_ratio(r)),
                "update ratios",
                "How much one optimizer step changes each weight, relative to its size; around 1e-3 is healthy.",
            ),
        ),
        Section(
            "activations",
            "Activation zero fractions",
            plot(
                lambda r: layer_plot(
                    r,
                    "activations",
                    "zeros",
                    "share of zeros in activation outputs",
                    "share",
                    None,
                    lambda n: n.endswith("/output"),
                    log=False,
                ),
                "activation zero fractions",
            ),
        ),
    ]
    job = JobDir(job_dir).read_record_data() or {}
    return write_page(folder / REPORT, f"kennel debugger: {job.get('name') or job_dir.name}", job, sections, records)

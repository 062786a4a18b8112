"""monitor.html: what ``kennel monitor`` found, one self-contained page (figures embedded): a summary of what
was compared, the rules' findings, and each quantity's distribution on the valid photos and in traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kennel.findings import ISSUES_FOUND, NO_ISSUES
from kennel.monitor.reference import REFERENCE_FILE
from kennel.monitor.run import MonitorRun
from kennel.report import Section, render_template
from kennel.report.plots import figure_png, new_figure
from kennel.report.section import write_page

MONITOR_PAGE = "monitor.html"


def verdict(run: MonitorRun) -> dict[str, str]:
    """The page's first line, and its style: what was found, or why nothing could be judged."""
    lines = len(run.comparison.traffic)
    if run.too_few:
        return {
            "style": "note",
            "text": f"Too few lines to judge: the capture has {lines} line(s) of this model; the rules judge from "
            f"{run.least_lines}. Let the endpoint capture more traffic (or raise --capture-sample).",
        }
    if run.fired:
        names = ", ".join(f.rule for f in run.fired)
        return {"style": "bad", "text": f"Drift found by {len(run.fired)} of {len(run.findings)} rules: {names}."}
    judged = sum(1 for f in run.findings if f.status == NO_ISSUES)
    return {"style": "good", "text": f"No drift: {judged} of {len(run.findings)} rules judged and found none."}


def _compared(run: MonitorRun) -> list[tuple[str, str]]:
    reference, traffic, job = run.reference, run.traffic, run.job or {}
    rows = [("model", f"{run.artifact} ({run.info.backbone}, {len(run.info.class_names)} classes)")]
    if job:
        rows.append(("job", f"{job.get('id')} ({job.get('name')})"))
    unreadable = f", {len(reference.unreadable)} unreadable left out" if reference.unreadable else ""
    rows.append(("valid photos", f"{len(reference.sample)} of {reference.valid}{unreadable}"))
    how = f"read back from {REFERENCE_FILE}" if reference.cached else "computed now"
    rows.append(("reference", f"{how} (a pass of the model over the split: {reference.seconds:.1f} s)"))
    rows.append(("capture", f"{traffic.folder}, {traffic.files} file(s)"))
    span = traffic.span()
    rows.append(("lines compared", f"{len(run.comparison.traffic)}" + (f", {span}" if span else "")))
    p50, p95 = traffic.latency_ms(0.5), traffic.latency_ms(0.95)
    if p50 is not None:
        rows.append(("latency", f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"))
    if traffic.photos:
        rows.append(("photos kept", f"{traffic.photos} (under {traffic.folder / 'photos'})"))
    return rows


def _notes(run: MonitorRun) -> list[dict[str, Any]]:
    traffic, notes = run.traffic, []
    named = "; ".join(traffic.other_models[:3])
    if traffic.foreign:
        notes.append(
            {
                "error": True,
                "text": f"No capture line is of this model: they name {named}. They are "
                "compared all the same, so a drift may only be the other model's.",
            }
        )
    if traffic.other:
        notes.append(
            {
                "error": False,
                "text": f"{traffic.other} line(s) of another model were left out ({named}).",
            }
        )
    if traffic.dropped:
        notes.append(
            {
                "error": False,
                "text": f"The capture dropped at least {traffic.dropped} sampled request(s) while its writer was "
                "behind: the lines are still a fair sample unless the drops came in bursts of one kind of traffic.",
            }
        )
    return notes


def _summary(run: MonitorRun) -> str:
    rule = run.rules[0] if run.rules else None
    return render_template(
        "monitor_summary.html",
        verdict=verdict(run),
        rows=_compared(run),
        notes=_notes(run),
        moderate=getattr(rule, "moderate", 0.1),
        major=getattr(rule, "major", 0.25),
        alpha=getattr(rule, "alpha", 0.01),
    )


def _sides(run: MonitorRun, rule, finding) -> tuple[str, str]:
    """The finding's evidence on each side, as the rule shows values: the medians, or the share of the category
    it speaks of."""
    numbers = finding.numbers
    if "valid_median" in numbers:
        return rule.show(numbers["valid_median"]), rule.show(numbers["traffic_median"])
    if "valid_share" in numbers:
        category, _, _ = rule.focus(*rule.sides(run.comparison))
        return rule.show(category, numbers["valid_share"]), rule.show(category, numbers["traffic_share"])
    return "–", "–"


def finding_rows(run: MonitorRun) -> list[dict[str, Any]]:
    """One row per rule, for the page and the command's table."""
    rows = []
    for rule, finding in zip(run.rules, run.findings, strict=True):
        valid, traffic = _sides(run, rule, finding)
        rows.append(
            {
                "name": finding.rule,
                "description": rule.describe(),
                "status": finding.status,
                "psi": finding.numbers.get("psi"),
                "p": finding.numbers.get("p_value"),
                "valid": valid,
                "traffic": traffic,
                "message": finding.message,
                "advice": finding.advice,
            }
        )
    return rows


def _findings(run: MonitorRun) -> str:
    return render_template("monitor_findings.html", rows=finding_rows(run))


def _distributions(run: MonitorRun) -> str:
    figures = []
    for rule, finding in zip(run.rules, run.findings, strict=True):
        if finding.status not in (NO_ISSUES, ISSUES_FOUND):
            continue
        figure = new_figure(6.0, 3.4)
        rule.plot(run.comparison, finding, figure.subplots())
        figure.tight_layout()
        caption = finding.message if finding.fired else f"no drift (PSI {finding.numbers['psi']:.3f})"
        figures.append({"name": rule.name, "quantity": rule.quantity, "png": figure_png(figure), "caption": caption})
    return render_template("monitor_distributions.html", figures=figures)


SECTIONS = [
    Section("monitor-summary", "Summary", _summary),
    Section("monitor-findings", "Findings", _findings),
    Section("monitor-distributions", "Valid photos vs traffic", _distributions),
]


def write_monitor_page(run: MonitorRun, path: Path | str) -> Path:
    """Write the page of ``run`` to ``path`` (atomically) and return its path."""
    job = run.job or {}
    title = f"kennel monitor: {job.get('name') or job.get('id') or run.artifact}"
    return write_page(Path(path), title, job, SECTIONS, run)

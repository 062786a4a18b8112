"""The debugger's summary and report: the rules' statuses with their first findings, and plots of loss,
gradient norms, weight update ratios and activation zero fractions over steps (``debug/report.html``; the
figures are drawn in :mod:`kennel.debugger.plots`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kennel.debugger.plots import DebugPage, layer_figure, loss_figure, update_ratio
from kennel.debugger.store import FINDINGS, FOLDER, REPORT, RULES, load_records, read_rule_statuses
from kennel.findings import NO_ISSUES, Finding, load_findings
from kennel.jobs.folder import JobDir
from kennel.report.data import MissingInput, ReportData
from kennel.report.section import Section, render_template, write_page
from kennel.report.sections import add_section


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


def rules_html(folder: Path, page: str | None = None, job: str | None = None) -> str:
    """The rules summary; on the job's report, ``page`` links the debugger's own page, or the command that
    writes it names ``job`` where it is not written yet."""
    rows, whys = rules_summary(folder)
    issues = [f for f in load_findings(folder / FINDINGS) if f.fired]
    findings = sorted(issues, key=lambda f: (f.step is None, f.step or 0))
    return render_template("debugger_rules.html", rows=rows, whys=whys, findings=findings, page=page, job=job)


def report_section(data: ReportData) -> str:
    """The job report's debugger section: the rules summary, with a link to the plots when written."""
    folder = data.job_dir / FOLDER
    if not (folder / RULES).is_file() and not (folder / FINDINGS).is_file():
        raise MissingInput("no debugger output: the job ran with debug.preset off, or before its first epoch ended")
    page = f"{FOLDER}/{REPORT}" if (folder / REPORT).is_file() else None
    return rules_html(folder, page, (data.job or {}).get("id") or "JOB")


add_section(Section("debugger", "Debugger rules", report_section), before="test-metrics")


# --- the debugger's own page ----------------------------------------------------------------------


def write_debug_report(job_dir: Path | str) -> Path:
    """Write ``debug/report.html`` of a job folder and return its path."""
    job_dir = Path(job_dir)
    folder = job_dir / FOLDER
    job = JobDir(job_dir).read_record_data() or {}
    page = DebugPage.load(load_records(job_dir), job)

    def plot(render, alt: str, note: str = ""):
        def section(data: DebugPage) -> str:
            png, caption = render(data)
            return render_template("debugger_plot.html", png=png, alt=alt, caption=caption, note=note)

        return section

    sections = [
        Section("rules", "Rules summary", lambda _: rules_html(folder)),
        Section("loss", "Loss in TRAIN and EVAL", plot(loss_figure, "loss over steps")),
        Section(
            "gradients",
            "Gradient norm per layer",
            plot(lambda p: layer_figure(p, "gradients", "norm", "gradient L2 norm", "norm"), "gradient norms"),
        ),
        Section(
            "updates",
            "Weight update ratio",
            plot(
                lambda p: layer_figure(
                    p, "weights", "update", "update / weight (L2 norms)", "ratio", update_ratio(p.records)
                ),
                "update ratios",
                "How much one optimizer step changes each weight, relative to its size; around 1e-3 is healthy.",
            ),
        ),
        Section(
            "activations",
            "Activation zero fractions",
            plot(
                lambda p: layer_figure(
                    p,
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
    return write_page(folder / REPORT, f"kennel debugger: {job.get('name') or job_dir.name}", job, sections, page)

"""profile.html: the profiler report of a job, one self-contained page (figures embedded), in the sections
``rules.md`` lists: job summary, system usage, framework breakdown, rules, step durations, a plot per rule
that fired. The job's own report (report.html) gets a short "Profiler" section that links here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kennel.jobs.folder import JobDir
from kennel.profiler import plots
from kennel.profiler.profile import FOLDER, OPERATORS, TRACE, Profile
from kennel.profiler.rules import PROFILER_RULES
from kennel.profiler.summary import Summary, configured_rule, format_numbers, summarize
from kennel.report import MissingInput, Section, add_section, render_template
from kennel.report.section import write_page

PROFILE_FILE = JobDir.PROFILE_PAGE


@dataclass
class ProfileData:
    job_dir: Path
    profile: Profile
    summary: Summary

    @classmethod
    def load(cls, job_dir: Path | str) -> ProfileData:
        job_dir = Path(job_dir)
        job = JobDir(job_dir).read_record_data() or {}
        profile = Profile.load(job_dir)
        return cls(job_dir, profile, summarize(profile, job))

    def need_steps(self) -> None:
        if not self.profile.steps:
            raise MissingInput("no training steps were recorded: the job ended before its training loop ran")

    def need_samples(self) -> None:
        if not self.profile.samples:
            raise MissingInput("no system samples were recorded")

    def operators(self) -> list[dict[str, Any]] | None:
        try:
            return json.loads((self.job_dir / FOLDER / OPERATORS).read_text())
        except (OSError, json.JSONDecodeError):
            return None


def _summary(data: ProfileData) -> str:
    from kennel.jobs import engine_lines  # the lines `kennel jobs show` prints, so both read the same

    engine = data.summary.job.get("engine")
    lines = engine_lines(engine) if isinstance(engine, dict) else []
    return render_template("profile_summary.html", s=data.summary, problems=data.profile.problems, engine=lines)


def _system(data: ProfileData) -> str:
    data.need_samples()
    return render_template(
        "profile_system.html",
        rows=data.summary.usage,
        png=plots.system_png(data.profile),
        count=len(data.profile.samples),
    )


def _framework(data: ProfileData) -> str:
    data.need_steps()
    trace = data.job_dir / FOLDER / TRACE
    return render_template(
        "profile_framework.html",
        rows=data.summary.breakdown,
        png=plots.framework_png(data.profile.loop_breakdown()),
        operators=data.operators(),
        trace=trace if trace.is_file() else None,
        device=data.profile.device,
    )


def _rules(data: ProfileData) -> str:
    return render_template("profile_rules.html", rows=data.summary.rules, numbers=format_numbers)


def _steps(data: ProfileData) -> str:
    data.need_steps()
    outlier = data.profile.rule_results().get("StepOutlier")
    steps = []
    if outlier is not None and outlier.fired:  # mark the steps beyond the limit the rule fired with
        marked = configured_rule(data.profile, "StepOutlier").marked(data.profile, outlier)
        steps = data.profile.step_table["step"][marked]
    return render_template(
        "profile_steps.html", png=plots.steps_png(data.profile, list(steps)), steps=data.summary.steps
    )


def _rule_plots(data: ProfileData) -> str:
    figures = []
    for row in data.summary.fired:
        rule = configured_rule(data.profile, row.name) if row.name in PROFILER_RULES else None
        png = plots.rule_png(rule, data.profile, row.finding) if rule is not None else None
        figures.append({"row": row, "png": png})
    return render_template("profile_rule_plots.html", figures=figures)


SECTIONS = [
    Section("profile-summary", "Job summary", _summary),
    Section("system", "System usage", _system),
    Section("framework", "Framework breakdown", _framework),
    Section("rules", "Rules", _rules),
    Section("steps", "Step durations", _steps),
    Section("rule-plots", "Rules that fired", _rule_plots),
]


def write_profile_report(job_dir: Path | str, data: ProfileData | None = None) -> Path:
    """Write ``job_dir/profile.html`` (atomically) and return its path; ``data``: the job's profile, if loaded."""
    data = ProfileData.load(job_dir) if data is None else data
    if data.profile.empty:
        raise FileNotFoundError(f"{data.job_dir / FOLDER} holds no profiler records")
    job = data.summary.job
    title = f"kennel profiler report: {job.get('name') or job.get('id') or data.job_dir.name}"
    return write_page(data.job_dir / PROFILE_FILE, title, job, SECTIONS, data)


def job_report_section(job_dir: Path, job: dict[str, Any] | None = None) -> str:
    """The "Profiler" section of the job's report.html: the time split, the rules that fired, a link."""
    profile = Profile.load(job_dir)
    if profile.empty:
        raise MissingInput("no profiler records: the job ran with profiler.enabled false")
    summary = summarize(profile, job)
    return render_template("profile_job_section.html", s=summary, link=PROFILE_FILE)


add_section(Section("profiler", "Profiler", lambda data: job_report_section(data.job_dir, data.job)))

"""``kennel report``: one self-contained HTML page per job (figures embedded, no external assets).

The page is a list of sections (:data:`SECTIONS`); each renders from the job folder or, when its input is
missing, leaves a note, so a job that failed early still gets a useful report. Features built on it (the
debugger, the profiler) add theirs with :func:`add_section`; :mod:`kennel.pages` writes the page with them.
"""

from __future__ import annotations

from pathlib import Path

from kennel.atomic import atomic_write_text
from kennel.jobs.folder import JobDir
from kennel.report.data import MissingInput, ReportData
from kennel.report.section import RenderedSection, Section, render_section, render_template
from kennel.report.sections import SECTIONS, add_section

REPORT_FILE = JobDir.REPORT


def render_report(job_dir: Path | str, sections: list[Section] | None = None, gallery: str = "full") -> str:
    """The report page of ``job_dir`` as an HTML string; ``gallery`` as :attr:`ReportData.gallery` says."""
    data = ReportData.load(job_dir, gallery)
    rendered = [render_section(s, data) for s in (SECTIONS if sections is None else sections) if s.about(data)]
    job = data.job or {}
    title = f"kennel report: {job.get('name') or job.get('id') or Path(job_dir).name}"
    return render_template("report.html", title=title, job=job, sections=rendered)


def write_report(job_dir: Path | str, gallery: str = "full") -> Path:
    """Write ``job_dir/report.html`` (atomically) and return its path; ``gallery`` as :attr:`ReportData.gallery`
    says (the whole page by default)."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise FileNotFoundError(f"job folder {job_dir} does not exist")
    path = job_dir / REPORT_FILE
    atomic_write_text(path, render_report(job_dir, gallery=gallery))
    path.chmod(0o644)
    return path


__all__ = [
    "SECTIONS",
    "MissingInput",
    "RenderedSection",
    "ReportData",
    "Section",
    "add_section",
    "render_report",
    "render_section",
    "render_template",
    "write_report",
]

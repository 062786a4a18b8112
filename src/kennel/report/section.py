"""A report section: an id (the HTML anchor tests and links use), a title, and a renderer of HTML."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kennel.atomic import atomic_write_text
from kennel.report.data import MissingInput, ReportData

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Section:
    """``render`` returns an HTML fragment; it raises :class:`~kennel.report.data.MissingInput` when its input
    is absent, and the page then shows the message as a note in place of the section."""

    id: str
    title: str
    render: Callable[[ReportData], str]
    kinds: tuple[str, ...] | None = None  # the kinds of job it is about (JobRecord.kind); None: every job

    def about(self, data: ReportData) -> bool:
        """Whether the section belongs on this job's page (kennel's training curves are not a script's)."""
        return self.kinds is None or data.kind in self.kinds


@functools.lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, num=num, duration=duration, when=when)
    return env


def render_template(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` (autoescaped); sections added later may ship their own templates elsewhere."""
    return environment().get_template(name).render(**context)


@dataclass(frozen=True)
class RenderedSection:
    id: str
    title: str
    status: str  # ok, missing (input absent: a note), error (the renderer failed: a note)
    html: str = ""
    note: str = ""


def render_section(section: Section, data: ReportData) -> RenderedSection:
    try:
        return RenderedSection(section.id, section.title, "ok", html=section.render(data))
    except MissingInput as exc:
        return RenderedSection(section.id, section.title, "missing", note=str(exc))
    except Exception as exc:  # one broken section must not cost the whole report
        log.warning("report section %s failed", section.id, exc_info=True)
        return RenderedSection(section.id, section.title, "error", note=f"{type(exc).__name__}: {exc}")


def write_page(path: Path, title: str, job: dict[str, Any], sections: list[Section], data: Any) -> Path:
    """Render ``sections`` from ``data`` into one report page at ``path`` (written atomically, readable by all) and
    return ``path``."""
    rendered = [render_section(section, data) for section in sections]
    atomic_write_text(path, render_template("report.html", title=title, job=job, sections=rendered))
    path.chmod(0o644)
    return path


def pct(value: Any, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def when(value: Any) -> Any:
    """An ISO timestamp as a person reads it, in local time to the minute (``2026-12-01 15:19``), with the full
    value as its tooltip; anything else as it is."""
    from markupsafe import Markup, escape

    from kennel.jobs import local_minutes

    shown = local_minutes(value) if isinstance(value, str) else None
    if shown is None:
        return value
    full = escape(value)
    return Markup(f'<time datetime="{full}" title="{full}">{shown}</time>')

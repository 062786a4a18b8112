"""The report's section for a user's script (``kennel run``): each metric read from its log lines, drawn over its
points, and the end of what it wrote to stderr. Registered as it is imported (see :mod:`kennel.pages`), on the
pages of script jobs only."""

from __future__ import annotations

from kennel.jobs.folder import JobDir
from kennel.report import plots
from kennel.report.data import ReportData
from kennel.report.section import Section, render_template
from kennel.report.sections import add_section
from kennel.script.contract import ScriptJobDir
from kennel.script.metrics import point_value

MAX_PANELS = 6  # metrics drawn; the table lists every one
TAIL_LINES = 20


def _points(data: ReportData) -> dict[str, list[tuple[int, float]]]:
    records, _ = JobDir(data.job_dir).read_metrics_counted()
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.get("kind") == "script":
            series.setdefault(str(record["name"]), []).append((int(record["step"]), point_value(record)))
    return series


def metrics_png(series: dict[str, list[tuple[int, float]]]) -> str:
    names = list(series)[:MAX_PANELS]
    figure = plots.new_figure(min(4.2 * len(names), 12.6), 3.2 * ((len(names) + 2) // 3))
    axes = figure.subplots((len(names) + 2) // 3, min(len(names), 3), squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        steps, values = zip(*series[name], strict=True)
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("point (each line the regex matched)")
        plots.integer_ticks(ax)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return plots.figure_png(figure)


def script_section(data: ReportData) -> str:
    job = data.need_job()
    series = _points(data)
    stderr = ScriptJobDir(data.job_dir).stderr_log
    tail = stderr.read_text(errors="replace").splitlines()[-TAIL_LINES:] if stderr.is_file() else []
    rows = [
        {"name": name, "points": len(points), "first": points[0][1], "last": points[-1][1]}
        for name, points in series.items()
    ]
    definitions = (job.get("config") or {}).get("metrics") or []
    return render_template(
        "script_metrics.html",
        png=metrics_png(series) if series else None,
        rows=rows,
        definitions=definitions,
        tail=tail,
        script=(job.get("config") or {}).get("entry_point"),
    )


add_section(Section("script", "The script's metrics and log", script_section, ("script",)), before="curves")

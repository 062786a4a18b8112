"""The sections of a job report this package knows, in page order. A feature built on the report (the
debugger, the profiler) adds its own with :func:`add_section` when its report module is imported;
:mod:`kennel.pages` imports them all."""

from __future__ import annotations

from kennel.report import plots
from kennel.report.data import MissingInput, ReportData
from kennel.report.gallery import GALLERY_SIZE, build_gallery
from kennel.report.section import Section, render_template, when

MAX_CONFUSION_CLASSES = 30  # beyond this many classes the heatmap shows those most involved in mistakes
MAX_PAIRS = 20


def summary(data: ReportData) -> str:
    job = data.need_job()
    fields = [
        ("id", job.get("id")),
        ("name", job.get("name")),
        ("status", job.get("status")),
        ("kind", job.get("kind")),
        ("backbone", job.get("backbone")),
        ("study", job.get("study")),
        ("created", when(job.get("created"))),
        ("started", when(job.get("started"))),
        ("ended", when(job.get("ended"))),
        ("stop reason", job.get("stop_reason")),
        ("model artifact", job.get("artifact")),
    ]
    return render_template(
        "summary.html",
        job=job,
        fields=[(k, v) for k, v in fields if v not in (None, "")],
        params=sorted((job.get("params") or {}).items()),
        metrics=sorted((job.get("metrics") or {}).items()),
        problems=data.problems,
    )


def curves(data: ReportData) -> str:
    if not data.epochs and not data.steps:
        raise MissingInput("no training metrics: metrics.jsonl is missing or has no step or epoch lines")
    valid = [e for e in data.epochs if e.get("valid_accuracy") is not None]
    best = max(valid, key=lambda e: e["valid_accuracy"]) if valid else None
    last = data.epochs[-1] if data.epochs else None
    return render_template(
        "curves.html", png=plots.curves_png(data.epochs, data.steps), best=best, last=last, epochs=data.epochs
    )


def test_metrics(data: ReportData) -> str:
    if data.evaluation is not None:
        result = data.evaluation
        values = {"top1": result.top1, "top5": result.top5, "loss": result.loss, "count": result.count}
        return render_template("test_metrics.html", values=values, topk=result.topk, source="evaluation/")
    metrics = (data.job or {}).get("metrics") or {}
    if "test_accuracy" in metrics:
        values = {"top1": metrics.get("test_accuracy"), "top5": metrics.get("test_top5")}
        return render_template("test_metrics.html", values=values, topk=5, source="job.json")
    raise MissingInput("no test metrics: the job did not reach its test phase")


def per_class(data: ReportData) -> str:
    result = data.need_evaluation()
    return render_template("per_class.html", rows=result.per_class)


def confusion(data: ReportData) -> str:
    result = data.need_evaluation()
    if result.confusion.sum() == 0:
        raise MissingInput("the evaluation has no confusion matrix")
    classes = plots.confused_classes(result.confusion, MAX_CONFUSION_CLASSES)
    png = plots.confusion_png(result.confusion, result.class_names, classes)
    return render_template("confusion.html", png=png, shown=len(classes), total=len(result.class_names))


def confused_pairs(data: ReportData) -> str:
    result = data.need_evaluation()
    support = {row["name"]: row["support"] for row in result.per_class}
    pairs = [{**p, "support": support.get(p["true"])} for p in result.confused_pairs[:MAX_PAIRS]]
    return render_template("confused_pairs.html", pairs=pairs)


def mistakes(data: ReportData) -> str:
    result = data.need_evaluation()
    if data.gallery == "off" and result.mistakes:
        name = (data.job or {}).get("id") or data.job_dir.name
        raise MissingInput(f"a tuning trial's page leaves its mistakes out: kennel report {name} shows them")
    gallery = build_gallery(data, result.mistakes[:GALLERY_SIZE])
    return render_template(
        "mistakes.html", cards=gallery.cards, total=len(result.mistakes), looked_note=gallery.looked_note
    )


TRAINING = ("training",)  # what kennel's own training records: its epochs, its test evaluation
SECTIONS: list[Section] = [
    Section("summary", "Job summary", summary),
    Section("curves", "Training curves", curves, TRAINING),
    Section("test-metrics", "Test metrics", test_metrics, TRAINING),
    Section("per-class", "Per-class precision and recall", per_class, TRAINING),
    Section("confusion", "Confusion matrix", confusion, TRAINING),
    Section("confused-pairs", "Most-confused pairs", confused_pairs, TRAINING),
    Section("mistakes", "Most confident mistakes", mistakes, TRAINING),
]


def add_section(section: Section, before: str | None = None) -> Section:
    """Add ``section`` to every report, at the end or before the section with id ``before``."""
    if any(s.id == section.id for s in SECTIONS):
        raise ValueError(f"report section {section.id!r} already exists")
    ids = [s.id for s in SECTIONS]
    if before is not None and before not in ids:
        raise ValueError(f"no report section {before!r}; sections: {', '.join(ids)}")
    SECTIONS.insert(ids.index(before) if before else len(SECTIONS), section)
    return section

"""``kennel report STUDY``: one self-contained HTML page for a study: its settings and best trial, the trials
table, and Optuna's own plots (optimization history, per-epoch values, parameter importances, parallel
coordinates), drawn with matplotlib and embedded as PNG."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.jobs import JobNotFound, JobRecord, load_job
from kennel.report import MissingInput, Section, render_template
from kennel.report.plots import figure_png, integer_ticks
from kennel.report.section import when, write_page
from kennel.tune.results import ERROR, JOB, JOB_ID, best_trial, count, finished, outcome
from kennel.tune.study import StudyRecord, load_study_record, open_study

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# fANOVA fits a random forest to the completed trials: on fewer than this many its importances are noise, shown
# as if they meant something (three trials give every parameter about the same share).
MIN_IMPORTANCE_TRIALS = 10
# An outcome's colour in the table follows the job statuses' (report.html's status-* classes).
STATUS_OF = {"complete": "completed", "pruned": "pruned", "failed": "failed", "interrupted": "stopped"}


@dataclass
class StudyData:
    record: StudyRecord
    study: optuna.Study
    trials: list[optuna.trial.FrozenTrial]
    jobs: dict[int, JobRecord] = field(default_factory=dict)  # trial number -> its job

    @classmethod
    def load(cls, record: StudyRecord) -> StudyData:
        study = open_study(record)
        data = cls(record, study, study.get_trials(deepcopy=False))
        for trial in data.trials:
            ref = trial.user_attrs.get(JOB_ID) or trial.user_attrs.get(JOB)
            try:
                data.jobs[trial.number] = load_job(ref) if ref else None
            except (JobNotFound, OSError, ValueError):
                continue
        return data

    @property
    def completed(self) -> int:
        return count(self.trials).get("complete", 0) + count(self.trials).get("warm", 0)

    def link(self, job: JobRecord | None) -> str | None:
        report = job.folder.report if job else None
        return os.path.relpath(report, self.record.path) if report and report.is_file() else None


def _space_text(param: Any) -> str:
    if param.type == "categorical":
        return "one of " + ", ".join(map(str, param.choices))
    scale = "log scale" if param.log else (f"step {param.step:g}" if param.step else "linear")
    return f"{param.type} {param.low:g} – {param.high:g}, {scale}"


def summary(data: StudyData) -> str:
    record, settings = data.record, data.record.study_settings
    counts = count(data.trials)
    fields = [
        ("study", record.name),
        ("status", record.status),
        ("strategy", settings.strategy),
        ("pruner", settings.pruner),
        ("objective", f"{settings.objective} ({settings.direction})"),
        ("trials", f"{finished(counts)} of {record.session.get('trials')}"),
        ("outcomes", ", ".join(f"{n} {k}" for k, n in counts.items()) or "none yet"),
        ("stopped at", record.stop_reason),
        ("warm start", record.warm_start),
        ("storage", record.storage_label()),
        ("started", when(record.started)),
        ("ended", when(record.ended)),
    ]
    best = best_trial(data.trials, settings.maximize)
    best_config = record.path / "best.yaml"
    return render_template(
        "study_summary.html",
        fields=[(k, v) for k, v in fields if v not in (None, "")],
        best=best,
        objective=settings.objective,
        best_link=data.link(data.jobs.get(best.number)) if best else None,
        best_config=best_config if best_config.is_file() else None,
        space=[(name, _space_text(p)) for name, p in settings.space.parameters.items()],
    )


def trials(data: StudyData) -> str:
    if not data.trials:
        raise MissingInput("no trials yet")
    settings = data.record.study_settings
    rows = []
    for trial in data.trials:
        job = data.jobs.get(trial.number)
        kind = outcome(trial)
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = trial.user_attrs.get(ERROR) or (job.stop_reason if job else None) or ""
        rows.append(
            {
                "number": trial.number,
                "outcome": kind,
                "status": STATUS_OF.get(kind, ""),
                "value": trial.value if trial.values else None,
                "params": trial.params,
                "epochs": job.metrics.get("epochs_run") if job else None,
                "seconds": seconds,
                "job": job.id if job else trial.user_attrs.get(JOB),
                "name": job.name if job else None,
                "link": data.link(job),
                "note": note,
            }
        )
    return render_template(
        "study_trials.html", rows=rows, params=list(settings.space.parameters), objective=settings.objective
    )


@contextmanager
def _optuna_figure():
    """Optuna's matplotlib plots set a global style and open pyplot figures: keep both from leaking."""
    import matplotlib
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # "experimental" notices on every plot function
        before = set(plt.get_fignums())
        try:
            yield
        finally:
            for number in set(plt.get_fignums()) - before:
                plt.close(number)


def _study_figure(
    plot,
    data: StudyData,
    caption: str,
    alt: str,
    header: list[str] | None = None,
    rows: list | None = None,
    whole_x: bool = False,
) -> str:
    """One of Optuna's plots as a PNG; ``whole_x``: its x axis counts (trials, epochs), so ticks are integers."""
    with _optuna_figure():
        axes = plot(data.study)
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        if whole_x:
            integer_ticks(first)
        figure = first.figure
        figure.set_size_inches(9, 4.5)
        png = figure_png(figure)
    return render_template("study_figure.html", png=png, caption=caption, alt=alt, header=header, rows=rows)


def history(data: StudyData) -> str:
    from optuna.visualization.matplotlib import plot_optimization_history

    if not data.completed:
        raise MissingInput("no completed trial yet")
    caption = "The objective of every completed trial in the order they ran, and the best so far."
    return _study_figure(plot_optimization_history, data, caption, "optimization history", whole_x=True)


def intermediate(data: StudyData) -> str:
    from optuna.visualization.matplotlib import plot_intermediate_values

    if not any(t.intermediate_values for t in data.trials):
        raise MissingInput("no trial reported per-epoch values")
    caption = "The value each trial reported after every epoch; the pruner compares trials on these curves."
    return _study_figure(plot_intermediate_values, data, caption, "per-epoch values", whole_x=True)


def importances(data: StudyData) -> str:
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    if data.completed < MIN_IMPORTANCE_TRIALS:
        raise MissingInput(
            f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials to mean anything; this "
            f"study has {data.completed}. kennel tune --study {data.record.name} --trials N continues it to N "
            "trials in all."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = optuna.importance.get_param_importances(data.study)
    except (RuntimeError, ValueError) as exc:
        raise MissingInput(f"parameter importances could not be computed: {exc}") from None
    caption = (
        f"How much of the objective's variation each parameter explains (fANOVA over the {data.completed} completed "
        "trials; an estimate that firms up as trials are added)."
    )
    return _study_figure(
        plot_param_importances,
        data,
        caption,
        "parameter importances",
        header=["parameter", "importance"],
        rows=list(scores.items()),
    )


def parallel(data: StudyData) -> str:
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    if data.completed < 2:
        raise MissingInput("a parallel-coordinates plot needs at least two completed trials")
    caption = "Each line is a completed trial across its parameter values, coloured by the objective."
    return _study_figure(plot_parallel_coordinate, data, caption, "parallel coordinates")


STUDY_SECTIONS: list[Section] = [
    Section("study", "Study", summary),
    Section("trials", "Trials", trials),
    Section("history", "Optimization history", history),
    Section("intermediate", "Per-epoch values", intermediate),
    Section("importances", "Parameter importances", importances),
    Section("parallel", "Parallel coordinates", parallel),
]


def write_study_report(ref: str | Path) -> Path:
    """Write the study's ``report.html`` (atomically) and return its path."""
    record = load_study_record(ref)
    return write_page(
        record.path / REPORT_FILE, f"kennel study: {record.name}", {}, STUDY_SECTIONS, StudyData.load(record)
    )

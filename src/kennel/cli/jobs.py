"""``kennel jobs``: the training jobs console, and the tuning studies beside them. The job views read job folders
only (no mlflow, no torch), so they are instant; the study views load Optuna when asked."""

from __future__ import annotations

import typer

from kennel.cli.app import app
from kennel.cli.job_view import job_panel, jobs_listing
from kennel.cli.lookup import JOB_HELP, find_job
from kennel.cli.output import ListingFormat, console, format_option, listing_format, print_json, print_listing
from kennel.cli.study_view import show_best, studies_listing
from kennel.errors import UsageError
from kennel.home import jobs_dir
from kennel.jobs import STATUSES, JobRecord, list_jobs

jobs_app = typer.Typer(
    help="The jobs console: status, duration, hyperparameters and accuracy of every training job.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(jobs_app, name="jobs")

STUDY = typer.Option(None, "--study", help="only the trials of this tuning study")
STATUS = typer.Option(None, "--status", help=f"only jobs with this status: {', '.join(STATUSES)}")
LIMIT = typer.Option(30, "--limit", "-n", help="show at most this many, newest first (0: all)")
AS_JSON = typer.Option(False, "--json", help="print JSON records instead of a table (the same as --format json)")
RECORD_AS_JSON = typer.Option(False, "--json", help="print the record as JSON instead of a panel")
FORMAT = format_option()


def _select(study: str | None, status: str | None) -> list[JobRecord]:
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    records = list_jobs(study=study)
    return [r for r in records if status is None or r.status == status]


def _list(study: str | None, status: str | None, limit: int, fmt: str) -> None:
    records = _select(study, status)
    shown = records[:limit] if limit > 0 else records
    notice = f"{len(shown)} of {len(records)} jobs (--limit 0 shows all)" if len(shown) < len(records) else ""
    if not records:
        notice = f"no jobs under {jobs_dir()} yet" + ("" if study or status else "; 'kennel train --data DIR' runs one")
        if fmt == "table":
            typer.echo(notice)
            return
    caption = str(jobs_dir()) if notice else f"{len(shown)} jobs · {jobs_dir()}"
    listing = jobs_listing(shown, caption=caption, notice=notice, study=study)
    print_listing(listing, fmt, [r.to_dict() for r in shown])


@jobs_app.callback()
def jobs_callback(
    ctx: typer.Context,
    study: str | None = STUDY,
    status: str | None = STATUS,
    limit: int = LIMIT,
    as_json: bool = AS_JSON,
    fmt: ListingFormat | None = FORMAT,
) -> None:
    """List training jobs, newest first (the same as 'kennel jobs ls')."""
    if ctx.invoked_subcommand is None:
        _list(study, status, limit, listing_format(fmt, as_json))


@jobs_app.command("ls")
def jobs_ls(
    study: str | None = STUDY,
    status: str | None = STATUS,
    limit: int = LIMIT,
    as_json: bool = AS_JSON,
    fmt: ListingFormat | None = FORMAT,
) -> None:
    """List training jobs, newest first: status, start, duration, backbone, hyperparameters, accuracy."""
    _list(study, status, limit, listing_format(fmt, as_json))


@jobs_app.command("show")
def jobs_show(job: str = typer.Argument(..., help=JOB_HELP), as_json: bool = RECORD_AS_JSON) -> None:
    """Everything about one job: record, hyperparameters, metrics, the epochs table and its files."""
    record = find_job(job)
    if as_json:
        print_json(record.to_dict())
        return
    out = console()
    out.print(job_panel(record, out.width))


@jobs_app.command("best")
def jobs_best(
    study: str = typer.Argument(..., help="the tuning study"),
    metric: str = typer.Option(None, "--metric", help="rank jobs by this record metric instead of the objective"),
    minimize: bool = typer.Option(False, "--minimize", help="with --metric: lower is better (e.g. a loss)"),
    as_json: bool = RECORD_AS_JSON,
) -> None:
    """The best of a tuning study: its hyperparameters, job and metrics, written as a config to retrain.

    With --metric, or for jobs tagged with a study outside `kennel tune`: the best job by that record metric."""
    from kennel.tune.study import StudyNotFound, studies_dir, study_exists

    if metric is None and study_exists(study):
        show_best(study, as_json)
        return
    metric = metric or "best_valid_accuracy"
    tagged = list_jobs(study=study)
    if not tagged and not study_exists(study):
        raise StudyNotFound(
            f"no study {study!r}: no tuning study of that name under {studies_dir()} and no job tagged with it "
            "(kennel jobs studies lists the studies)"
        )
    scored = [r for r in tagged if isinstance(r.metrics.get(metric), (int, float))]
    if not scored:
        raise UsageError(f"no job of study {study!r} has metric {metric!r} (kennel jobs --study {study} lists them)")
    best = (min if minimize else max)(scored, key=lambda r: r.metrics[metric])
    if as_json:
        print_json(best.to_dict())
        return
    out = console()
    out.print(job_panel(best, out.width))


@jobs_app.command("studies")
def jobs_studies(as_json: bool = AS_JSON, fmt: ListingFormat | None = FORMAT) -> None:
    """List tuning studies, newest first: status, strategy, trials by outcome and the best objective."""
    from kennel.tune.results import with_current_counts
    from kennel.tune.study import list_studies, studies_dir

    fmt = listing_format(fmt, as_json)
    records = with_current_counts(list_studies())
    notice = "" if records else f"no studies under {studies_dir()} yet; 'kennel tune --data DIR' runs one"
    if notice and fmt == "table":
        typer.echo(notice)
        return
    print_listing(studies_listing(records, notice), fmt, [r.to_dict() for r in records])

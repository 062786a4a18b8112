"""How ``kennel jobs studies`` and ``kennel jobs best STUDY`` show tuning studies: the list as a table, and a
study's best trial with its job. Optuna and the study records load on first use."""

from __future__ import annotations

from kennel.cli.job_view import job_panel
from kennel.cli.output import console, print_json
from kennel.errors import Failure


def studies_table(records: list):
    """One row per study: status, strategy, trials by outcome and the best objective."""
    from rich.table import Table

    from kennel.processes import process_alive
    from kennel.tune.results import finished
    from kennel.tune.study import studies_dir

    table = Table(title="kennel tuning studies", caption=str(studies_dir()), caption_justify="left")
    for column in ("study", "status", "strategy", "objective", "trials", "complete", "pruned", "failed", "best"):
        table.add_column(column, justify="right" if column in ("trials", "complete", "pruned", "failed") else "left")
    table.add_column("best job", overflow="fold")
    for r in records:
        settings, counts = r.settings, r.counts
        done = finished(counts)
        best = r.best or {}
        value = f"{best['value']:.4f} (trial {best['number']})" if best.get("value") is not None else "-"
        gone = r.status == "running" and not process_alive(r.pid, r.host)
        table.add_row(
            r.name,
            "running? process gone" if gone else r.status,
            f"{settings.get('strategy')}/{settings.get('pruner')}",
            f"{settings.get('objective')} ({str(settings.get('direction'))[:3]})",
            f"{done}/{r.session.get('trials', '-')}",
            str(counts.get("complete", 0)),
            str(counts.get("pruned", 0)),
            str(counts.get("failed", 0)),
            value,
            str(best.get("job") or "-"),
        )
    return table


def show_best(name: str, as_json: bool) -> None:
    """``kennel jobs best STUDY`` for a tuning study: the best values, the best job and its metrics, and
    ``best.yaml`` written for a retrain."""
    from rich.table import Table

    from kennel.config import dotted_value
    from kennel.jobs import JobNotFound, load_job
    from kennel.tune.results import JOB_ID, best_trial, count, trial_config, write_best_config
    from kennel.tune.study import load_study_record, open_study

    record = load_study_record(name)
    settings = record.study_settings
    trials = open_study(record).get_trials(deepcopy=False)
    best = best_trial(trials, settings.maximize)
    if best is None:
        raise Failure(f"study {name!r} has no completed trial yet (kennel jobs --study {name} lists its jobs)")
    path = write_best_config(record, best)
    try:
        job = load_job(best.user_attrs[JOB_ID])
    except (KeyError, JobNotFound):
        job = None
    if as_json:
        print_json(
            {
                "study": record.name,
                "objective": settings.objective,
                "direction": settings.direction,
                "trial": best.number,
                "value": best.value,
                "params": best.params,
                "config": str(path),
                "counts": count(trials),
                "job": job.to_dict() if job else None,
            }
        )
        return
    base = trial_config(record.base, {}, "base").model_dump(mode="json")
    table = Table(title=f"study {record.name}: best of {len(trials)} trials, trial {best.number}", title_justify="left")
    for column in ("parameter", "best", "base config"):
        table.add_column(column, justify="left" if column == "parameter" else "right")
    for key, value in best.params.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value), str(dotted_value(base, key)))
    out = console()
    out.print(f"{settings.objective} = {best.value:.4f} ({settings.direction})", highlight=False)
    out.print(table)
    if job is not None:
        out.print(job_panel(job))
    out.print(f"config: {path}\nretrain: kennel train --config {path}", highlight=False, soft_wrap=True)

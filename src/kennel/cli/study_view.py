"""How ``kennel jobs studies`` and ``kennel jobs best STUDY`` show tuning studies: the list as a table, and a
study's best trial with its job. Optuna and the study records load on first use."""

from __future__ import annotations

from kennel.cli.job_view import GONE, job_panel, status_style
from kennel.cli.output import console, print_json
from kennel.errors import Failure


def _objective(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def studies_listing(records: list, notice: str = ""):
    """One row per study: status, strategy, trials by outcome and the best objective."""
    from kennel.cli.tables import Column, Listing
    from kennel.processes import process_alive
    from kennel.tune.results import finished
    from kennel.tune.study import studies_dir

    count = {"justify": "right", "rank": 4}
    columns = [
        Column("study", rank=0, breaks=""),
        Column("status", rank=0, style=status_style),
        Column("strategy", rank=5, breaks=""),
        Column("objective", rank=3, breaks=""),
        Column("direction", "dir", rank=3, show=lambda d: "-" if d is None else str(d)[:3]),
        Column("finished", "done", rank=2, justify="right"),
        Column("trials", rank=2, justify="right"),
        Column("complete", **count),
        Column("pruned", **count),
        Column("failed", **count),
        Column("best", rank=1, show=_objective, justify="right"),
        Column("best_trial", "trial", rank=2, justify="right"),
        Column("best_job", "best job", rank=6, breaks=""),
    ]
    rows = []
    for r in records:
        settings, counts, best = r.settings, r.counts, r.best or {}
        gone = r.status == "running" and not process_alive(r.pid, r.host)
        rows.append(
            {
                "study": r.name,
                "status": GONE if gone else r.status,
                "strategy": f"{settings.get('strategy')}/{settings.get('pruner')}",
                "objective": settings.get("objective"),
                "direction": settings.get("direction"),
                "finished": finished(counts),
                "trials": r.session.get("trials"),
                **{outcome: counts.get(outcome, 0) for outcome in ("complete", "pruned", "failed")},
                "best": best.get("value"),
                "best_trial": best.get("number"),
                "best_job": best.get("job"),
            }
        )
    see_all = "a wider terminal or --format tsv shows them; kennel jobs best STUDY shows one study"
    return Listing("kennel tuning studies", columns, rows, caption=str(studies_dir()), notice=notice, see_all=see_all)


def show_best(name: str, as_json: bool) -> None:
    """``kennel jobs best STUDY`` for a tuning study: the best values, the best job and its metrics, and the
    best values written for a retrain (``best.yaml`` for kennel's training, the script's arguments for a script's
    study)."""
    from rich.table import Table

    from kennel.jobs import JobNotFound, load_job
    from kennel.tune.results import JOB_ID, best_trial, count
    from kennel.tune.study import load_study_record, open_study
    from kennel.tune.trials import trial_kind

    record = load_study_record(name)
    settings = record.study_settings
    trials = open_study(record).get_trials(deepcopy=False)
    best = best_trial(trials, settings.maximize)
    if best is None:
        raise Failure(f"study {name!r} has no completed trial yet (kennel jobs --study {name} lists its jobs)")
    kind = trial_kind(settings.kind)
    written = kind.write_best(record, best)
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
                "config": str(written.path),
                "retrain": written.retrain,
                "arguments": written.arguments or None,
                "counts": count(trials),
                "job": job.to_dict() if job else None,
            }
        )
        return
    table = Table()
    for column in ("parameter", "best", "base"):
        table.add_column(column, justify="left" if column == "parameter" else "right")
    for key, value in best.params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        base = kind.base_value(record, key)
        table.add_row(key, shown, "-" if base is None else str(base))
    out = console()
    # The heading as lines of its own, the study first: a table's title is padded to the table's width.
    out.print(f"study {record.name}: best of {len(trials)} trials, trial {best.number}", highlight=False)
    out.print(f"{settings.objective} = {best.value:.4f} ({settings.direction})", highlight=False)
    out.print(table)
    if job is not None:
        out.print(job_panel(job, out.width))
    arguments = f"\narguments: {written.arguments}" if written.arguments else ""
    out.print(f"config: {written.path}{arguments}\nretrain: {written.retrain}", highlight=False, soft_wrap=True)

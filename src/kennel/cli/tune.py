"""``kennel tune``: a hyperparameter tuning job; ``kennel jobs studies`` lists them and ``kennel jobs best STUDY``
shows the winner (both in :mod:`kennel.cli.jobs`)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import typer

from kennel.cli.app import app, tracking_uri_option
from kennel.cli.script_options import CHANNELS, HYPERPARAMETERS, METRIC_DEFINITIONS, METRICS, SOURCE_DIR
from kennel.errors import UsageError
from kennel.tune.pruners import PRUNERS
from kennel.tune.strategies import STRATEGIES

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``600``, ``90s``, ``10m``, ``1.5h`` -> seconds."""
    match = DURATION.match(text)
    if not match:
        raise typer.BadParameter(f"expected seconds or a duration like 90s, 10m, 2h; got {text!r}")
    return float(match.group(1)) * SECONDS[match.group(2)]


def _choices(registry, default: str) -> str:
    marked = {name: f"{name} (default)" if name == default else name for name in registry}
    return "; ".join(f"{marked[name]}: {registry.get(name).description}" for name in registry)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _set(value: Any) -> bool:
    """Whether an option was given: ``--seed 0`` and ``--target 0`` were; an empty ``--set`` or an unset switch not."""
    return value is not None and value is not False and value != []


def _direction(direction: str | None, maximize: bool, minimize: bool) -> str | None:
    if maximize and minimize:
        raise UsageError("--maximize and --minimize contradict each other; give one")
    chosen = "maximize" if maximize else "minimize" if minimize else None
    if chosen and direction and direction != chosen:
        raise UsageError(f"--direction {direction} and --{chosen} contradict each other; give one")
    return chosen or direction


def _script_base(
    script, source_dir, channels, data, hyperparameters, metrics, metric_definitions, overrides, no_tracking
) -> dict[str, Any]:
    """``kennel run``'s settings for every trial of a script's study, checked as ``kennel run`` checks them."""
    from kennel.cli.run import script_config

    config = script_config(
        script, source_dir, channels, data, hyperparameters, metrics, metric_definitions, [], None, None, None,
        overrides, None, no_tracking,
    )  # fmt: skip
    return config.model_dump(mode="json")


def _check_script_study(base: dict[str, Any], objective: str | None, space: str | None, study: str | None) -> None:
    """A script's study optimizes one of its metrics over a space of its hyperparameters: both must be named
    (kennel's own defaults are kennel training config keys and metrics) unless the study exists already."""
    from kennel.tune import TuneError
    from kennel.tune.study import study_exists

    names = [metric["name"] for metric in base.get("metrics", [])]
    if objective is None and not (study and study_exists(study)):
        raise TuneError(f"--script needs --objective NAME, one of its --metric names ({', '.join(names) or 'none'})")
    if objective is not None and objective not in names:
        known = ", ".join(names) or "none: pass --metric NAME=REGEX"
        raise TuneError(f"--objective {objective}: not one of the script's metrics ({known})")
    if space is None and not (study and study_exists(study)):
        raise TuneError("--script needs --space FILE: a YAML search space over the script's hyperparameters")


def _check_worker(study: str | None, storage: str | None, refused: list[str]) -> None:
    """A worker runs the study as its creator defined it: it names the study and the database, nothing more
    than where the photos are on this machine and how many workers run here."""
    from kennel.tune import TuneError

    if study is None or storage is None:
        raise TuneError("--worker joins an existing study: pass --study NAME and --storage URL (postgresql://...)")
    if refused:
        raise TuneError(
            f"--worker takes the study's settings from its storage; leave out {', '.join(refused)} "
            f"(kennel tune --storage URL --study {study} without --worker changes them)"
        )


@app.command("tune")
def tune_command(
    data: Path = typer.Option(None, "--data", "-d", help="dataset folder with train/ valid/ test/"),
    config_file: Path = typer.Option(None, "--config", "-c", help="training config (YAML) under every trial"),
    overrides: list[str] = typer.Option([], "--set", help="a training config key for every trial, e.g. --set seed=1"),
    space: str = typer.Option(
        None, "--space", "-s", help="search space: a YAML file, or a shipped one: default (the default), seed"
    ),
    study: str = typer.Option(None, "--study", help="study name; an existing study resumes where it stopped"),
    worker: bool = typer.Option(
        False, "--worker", help="join the study --study in --storage with its stored settings (another machine's)"
    ),
    trials: int = typer.Option(
        None, "--trials", "-n", help="the study's total trials, all sessions and machines (default 20; grid: all)"
    ),
    parallel: int = typer.Option(None, "--parallel", "-p", help="worker processes on this machine (default 1)"),
    strategy: str = typer.Option(None, "--strategy", help=_choices(STRATEGIES, "tpe")),
    pruner: str = typer.Option(None, "--pruner", help=_choices(PRUNERS, "median")),
    objective: str = typer.Option(
        None, "--objective", help="job metric to optimize, e.g. valid_loss (default best_valid_accuracy)"
    ),
    direction: str = typer.Option(None, "--direction", help="maximize or minimize (default: minimize losses)"),
    timeout: str = typer.Option(None, "--timeout", help="wall-clock limit (600, 90s, 10m, 2h): no trial starts after"),
    target: float = typer.Option(None, "--target", help="stop once the best objective reaches this value"),
    storage: str = typer.Option(
        None, "--storage", help="database URL several machines share, e.g. postgresql://user:pw@host/kennel"
    ),
    warm_start: str = typer.Option(None, "--warm-start", help="seed a new study with an earlier study's trials"),
    seed: int = typer.Option(None, "--seed", help="seed of the search strategy (default 0)"),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="do not start with the base config's values"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="do not record the trials in MLflow"),
    tracking_uri: str = tracking_uri_option(),
    as_json: bool = typer.Option(False, "--json", help="print the study record as JSON on the last line"),
    script: Path = typer.Option(
        None,
        "--script",
        help="tune the user's own training script (kennel run): each trial runs it with its values; "
        "--source-dir, --channel, --hp, --metric and --metric-definitions say what it gets",
    ),
    source_dir: Path = SOURCE_DIR,
    channels: list[str] = CHANNELS,
    hyperparameters: list[str] = HYPERPARAMETERS,
    metrics: list[str] = METRICS,
    metric_definitions: Path = METRIC_DEFINITIONS,
    maximize: bool = typer.Option(False, "--maximize", help="the objective is better higher (--direction maximize)"),
    minimize: bool = typer.Option(False, "--minimize", help="the objective is better lower (--direction minimize)"),
) -> None:
    """Tune hyperparameters: run many training jobs (trials) and find the best values of a search space.

    Each trial is a training job that `kennel jobs --study NAME` lists. Weak trials are pruned after an epoch.
    Ctrl-C stops the study; `kennel tune --study NAME` resumes it without losing a finished trial. Then
    `kennel jobs best NAME` shows the best values and writes their config, `kennel report NAME` the study's page.

    On several machines: `kennel tune --storage postgresql://... --study NAME --data DIR` on one creates the
    study; `kennel tune --worker --storage postgresql://... --study NAME` on the others joins it.

    With --script SCRIPT.py the trials run the user's own training script (kennel run) with the trial's values
    as --name value; the objective is one of its --metric lines: its last value the trial's, the earlier ones
    what the pruner judges. The space names the script's hyperparameters.
    """
    from kennel.config import deep_merge, dotted_to_nested, parse_assignments, read_config_file
    from kennel.home import use_tracking_uri
    from kennel.tune import TuneRequest, tune

    use_tracking_uri(tracking_uri)
    direction = _direction(direction, maximize, minimize)
    kind = None
    if script is not None:
        if config_file is not None:
            raise UsageError("--config is a kennel training config; with --script give --hp, --channel and --set")
        base = _script_base(
            script, source_dir, channels, data, hyperparameters, metrics, metric_definitions, overrides, no_tracking
        )
        _check_script_study(base, objective, space, study)
        kind = "script"
    else:
        given = {"--source-dir": source_dir, "--channel": channels, "--hp": hyperparameters, "--metric": metrics}
        given["--metric-definitions"] = metric_definitions
        stray = [flag for flag, value in given.items() if _set(value)]
        if stray:
            raise UsageError(f"{', '.join(stray)} go with --script SCRIPT.py (tuning the user's own script)")
        flags = _given(**{"data.root": str(data) if data else None}, **parse_assignments(overrides))
        if no_tracking:
            flags["tracking"] = False
        base = deep_merge(read_config_file(config_file) if config_file else {}, dotted_to_nested(flags))
    if worker:
        study_flags = {
            "--config": config_file, "--set": overrides, "--space": space, "--trials": trials,
            "--strategy": strategy, "--pruner": pruner, "--objective": objective, "--direction": direction,
            "--timeout": timeout, "--target": target, "--warm-start": warm_start, "--seed": seed,
            "--no-baseline": no_baseline, "--script": script,
        }  # fmt: skip
        _check_worker(study, storage, [flag for flag, value in study_flags.items() if _set(value)])
        request = TuneRequest(
            study=study, base=base or None, session=_given(parallel=parallel), storage=storage, worker=True
        )
    else:
        request = TuneRequest(
            study=study,
            space=space,
            base=base or None,
            settings=_given(
                kind=kind,
                objective=objective,
                direction=direction,
                strategy=strategy,
                pruner=pruner,
                seed=seed,
                baseline=False if no_baseline else None,
            ),
            session=_given(
                trials=trials,
                parallel=parallel,
                target=target,
                timeout_s=parse_duration(timeout) if timeout else None,
            ),
            storage=storage,
            warm_start=warm_start,
        )
    try:
        record = tune(request, stream=sys.stdout)
    except KeyboardInterrupt:  # before the trials began (while the features were computed)
        typer.secho("stopped before any trial ran", err=True, fg="yellow")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(record.to_dict(), default=str))
    if record.status == "stopped":
        again = f"--worker --storage URL --study {record.name}" if worker else f"--study {record.name}"
        typer.secho(f"stopped; `kennel tune {again}` resumes it", err=True, fg="yellow")
        raise typer.Exit(130)
    if record.status == "failed":
        raise typer.Exit(1)

"""``kennel run``: the user's own SageMaker script-mode training script, run unchanged as a kennel job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from kennel.cli.app import app, tracking_uri_option
from kennel.cli.output import print_stopped_by
from kennel.cli.script_options import CHANNELS, HYPERPARAMETERS, METRIC_DEFINITIONS, METRICS, SOURCE_DIR
from kennel.errors import STOPPED_BY_RULE
from kennel.lines import fitted


@app.command(
    "run",
    epilog="Exit codes: 0 the script exited 0; 1 it failed (the last line says why); 2 a request it cannot use "
    f"(a missing script or channel folder, --hp without =, a bad regex); {STOPPED_BY_RULE} a debugger or profiler "
    "rule with stop set ended it; 130 interrupted (--resume runs it again, its checkpoints folder kept).",
)
def run_command(
    script: Path = typer.Argument(None, help="the training script (its folder is the source folder by default)"),
    extra: list[str] = typer.Argument(None, help="after --: arguments passed to the script after the hyperparameters"),
    source_dir: Path = SOURCE_DIR,
    channels: list[str] = CHANNELS,
    data: Path = typer.Option(None, "--data", "-d", help="the channel 'training', SageMaker's default"),
    hyperparameters: list[str] = HYPERPARAMETERS,
    metrics: list[str] = METRICS,
    metric_definitions: Path = METRIC_DEFINITIONS,
    processes: int = typer.Option(None, "--processes", min=1, help="run N processes on this machine, under torchrun"),
    device: str = typer.Option(None, "--device", help="auto, cpu (SM_NUM_GPUS=0) or cuda"),
    debug: str = typer.Option(None, "--debug", help="the hook's capture: off, light (default) or full"),
    overrides: list[str] = typer.Option(
        [], "--set", help="a debugger or profiler setting, KEY=VALUE, e.g. --set debug.preset=full (repeatable)"
    ),
    name: str = typer.Option(None, "--name", help="job name (default: the script's name)"),
    resume_job: str = typer.Option(None, "--resume", help="run a stopped or failed job's script again"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="do not record the job in MLflow"),
    tracking_uri: str = tracking_uri_option(),
    as_json: bool = typer.Option(False, "--json", help="print the job record as JSON on the last line"),
) -> None:
    """Run a SageMaker script-mode training script unchanged, as a kennel job.

    It runs in its own process, from a copy of its source folder, with SageMaker's training environment.
    Hyperparameters reach it as --name value, channels as SM_CHANNEL_<NAME>; its SM_MODEL_DIR is the job's model.
    `import smdebug.pytorch as smd` resolves to kennel's debugger, and the profiler samples its processes.
    """
    from kennel.home import use_tracking_uri
    from kennel.script.job import resume_script, run_script

    use_tracking_uri(tracking_uri)
    try:
        if resume_job:
            record = resume_script(resume_job)
        else:
            config = script_config(
                script, source_dir, channels, data, hyperparameters, metrics, metric_definitions, extra or [],
                processes, device, debug, overrides, name, no_tracking,
            )  # fmt: skip
            record = run_script(config)
    except KeyboardInterrupt:
        typer.secho("stopped; `kennel run --resume latest` runs the script again", err=True)
        raise typer.Exit(130) from None
    _report(record, as_json)


def script_config(
    script, source_dir, channels, data, hyperparameters, metrics, metric_definitions, extra, processes, device,
    debug, overrides, name, no_tracking,
):  # fmt: skip
    """``kennel run``'s flags as checked run settings (``kennel tune --script`` takes the same)."""
    from pydantic import ValidationError

    from kennel.config import ConfigError, deep_merge, dotted_to_nested, parse_assignments
    from kennel.script.config import (
        ScriptConfig,
        ScriptError,
        parse_channels,
        parse_hyperparameters,
        parse_metric_flags,
        read_metric_definitions,
        unique_metrics,
    )
    from kennel.validation import one_line

    if script is None:
        raise ScriptError("no script: kennel run SCRIPT.py [--channel NAME=DIR] [--hp NAME=VALUE] ...")
    source, entry_point = _entry_point(script, source_dir)
    definitions = parse_metric_flags(metrics)
    if metric_definitions is not None:
        definitions += read_metric_definitions(metric_definitions)
    settings = {
        "name": name,
        "entry_point": entry_point,
        "source_dir": str(source),
        "channels": {k: str(v) for k, v in parse_channels(channels, data).items()},
        "hyperparameters": parse_hyperparameters(hyperparameters),
        "user_args": list(extra),
        "metrics": [d.model_dump() for d in unique_metrics(definitions)],
        "processes": processes,
        "device": device,
        "tracking": False if no_tracking else None,
        "debug": {"preset": debug} if debug else None,
    }
    settings = {key: value for key, value in settings.items() if value is not None}
    assignments = parse_assignments(overrides)
    unknown = [key for key in assignments if key.split(".")[0] not in ("debug", "profiler")]
    if unknown:
        raise ScriptError(f"--set {unknown[0]}: kennel run takes debug.* and profiler.* settings here")
    settings = deep_merge(settings, dotted_to_nested(assignments))
    try:
        return ScriptConfig.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(f"invalid run settings: {one_line(exc)}") from None


def _entry_point(script: Path, source_dir: Path | None) -> tuple[Path, str]:
    """``(source folder, entry point relative to it)``, as SageMaker's ``source_dir`` and ``entry_point``."""
    from kennel.config import absolute
    from kennel.script.config import ScriptError

    if source_dir is None:
        path = absolute(script)
        if not path.is_file():
            raise ScriptError(f"{script}: no such script")
        return path.parent, path.name
    folder = absolute(source_dir)
    if not folder.is_dir():
        raise ScriptError(f"--source-dir {source_dir}: no such folder")
    inside = folder / script
    if inside.is_file():
        return folder, str(script)
    path = absolute(script)
    if path.is_file() and path.is_relative_to(folder):
        return folder, str(path.relative_to(folder))
    raise ScriptError(f"{script}: no such script in --source-dir {source_dir}")


def _report(record, as_json: bool) -> None:
    """The job's last lines: its outcome and metrics, the model, why it stopped or failed; the exit code."""
    from kennel.script.contract import ScriptJobDir

    metrics = {k: v for k, v in record.metrics.items() if k != "exit_code"}
    summary = f"job {record.id} {record.status}"
    if metrics:
        summary += ": " + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    typer.secho(fitted(summary, sys.stderr), err=True, fg="green" if record.status == "completed" else "yellow")
    if record.artifact:
        typer.echo(f"model: {record.artifact}", err=True)
    debug = ScriptJobDir(record.path).debug
    watched = record.config.get("debug", {}).get("preset", "light") != "off"
    if watched and record.status in ("completed", "stopped") and not _has_files(debug):
        note = "note: the script created no smdebug hook (smd.Hook.create_from_json_file(), get_hook), so the "
        typer.echo(fitted(note + "debugger saw nothing", sys.stderr), err=True)
    if as_json:
        typer.echo(json.dumps(record.to_dict(), default=str))
    if record.status == "failed":
        typer.secho(f"error: {record.error}", err=True, fg="red")
        typer.echo(f"the script's output: {ScriptJobDir(record.path).logs}", err=True)
        raise typer.Exit(1)
    if record.status == "stopped" and record.stop_reason:
        rule = record.stop_reason.partition(":")[0]
        command = "debug" if rule.startswith("debugger") else "profile"
        if rule.startswith(("debugger rule", "profiler rule")):
            print_stopped_by(rule, command, record.id)
            raise typer.Exit(STOPPED_BY_RULE)


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())

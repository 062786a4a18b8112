"""``kennel train``: one training job. Also honours SageMaker's training conventions (see ``sagemaker_env``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from kennel.cli.app import app, tracking_uri_option
from kennel.cli.output import print_stopped_by
from kennel.errors import STOPPED_BY_RULE
from kennel.lines import fitted
from kennel.recipes import RECIPES


def sagemaker_env() -> dict[str, object]:
    """Config overrides from SageMaker's environment: channels as split folders."""
    channels = {"train": "SM_CHANNEL_TRAIN", "valid": "SM_CHANNEL_VALID", "test": "SM_CHANNEL_TEST"}
    return {f"data.{split}": os.environ[var] for split, var in channels.items() if var in os.environ}


def _export_sagemaker_outputs(record) -> None:
    """Copy the model to ``SM_MODEL_DIR`` and the evaluation/report to ``SM_OUTPUT_DATA_DIR`` when set."""
    import shutil

    if os.environ.get("SM_MODEL_DIR") and record.artifact:
        shutil.copytree(record.artifact, os.environ["SM_MODEL_DIR"], dirs_exist_ok=True)
    if os.environ.get("SM_OUTPUT_DATA_DIR"):
        out = Path(os.environ["SM_OUTPUT_DATA_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        for source in [*record.folder.outputs(), record.folder.record_file]:
            if source.is_dir():
                shutil.copytree(source, out / source.name, dirs_exist_ok=True)
            else:
                shutil.copy2(source, out / source.name)


@app.command(
    "train",
    # One string: help text keeps the line breaks of a docstring, and this is read at every terminal width.
    epilog="Exit codes: 0 completed, or ended by early stopping; 1 failed; 2 a request it cannot use (a bad value, "
    f"weights it cannot get); {STOPPED_BY_RULE} stopped by a debugger or profiler rule with stop set (the model is "
    "kept; the last line names the rule and the command that shows why); 130 interrupted (--resume continues).",
)
def train_command(
    data: Path = typer.Option(None, "--data", "-d", help="dataset folder with train/ valid/ test/"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML config (see `kennel train --print-config`)"),
    recipe: str = typer.Option(
        None,
        "--recipe",
        help=f"named settings to start from: {', '.join(RECIPES.names()[:-1])} or {RECIPES.names()[-1]} "
        "(`--print-config` shows them)",
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="backbone name (`kennel models` lists them); several joined by + are fused: one head on their "
        "features side by side",
    ),
    weights: Path = typer.Option(None, "--weights", help="pretrained weights file (.safetensors or .pth)"),
    freeze: str = typer.Option(
        None, "--freeze", help="backbone stages to freeze: all, 0 (none), N (the first N) or -N (all but the last N)"
    ),
    epochs: int = typer.Option(None, "--epochs", help="number of epochs"),
    lr: float = typer.Option(None, "--lr", help="learning rate of the head (also --learning-rate)"),
    # The spellings SageMaker scripts use, accepted but not listed: three names in one column of --help at 80
    # columns were cut short.
    learning_rate: float = typer.Option(None, "--learning-rate", "--learning_rate", hidden=True),
    batch_size: int = typer.Option(
        None, "--batch-size", help="images per step, over all processes (the global batch; also --batch_size)"
    ),
    batch_size_underscored: int = typer.Option(None, "--batch_size", hidden=True),
    optimizer: str = typer.Option(None, "--optimizer", help="adamw or sgd"),
    augment: str = typer.Option(None, "--augment", help="none, light or strong"),
    views: int = typer.Option(None, "--views", help="augmented views per train photo in the feature cache"),
    tta: str = typer.Option(
        None,
        "--tta",
        help="test-time augmentation: none, flip (a photo and its mirror image) or crops (the photo and its four "
        "corners)",
    ),
    stage_cache: bool = typer.Option(
        False,
        "--stage-cache",
        help="with --freeze N or -N: compute the frozen stages' output once per photo (and view), then fine-tune the "
        "rest on it instead of on photos (fast on a CPU; no fresh augmentation each epoch)",
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda"),
    engine: str = typer.Option(
        None, "--engine", help="backend of the frozen forward passes: auto (measured; see `kennel doctor`) or a name"
    ),
    precision: str = typer.Option(None, "--precision", help="of the frozen backbone: auto, fp32, bf16 or int8"),
    name: str = typer.Option(None, "--name", help="job name"),
    seed: int = typer.Option(None, "--seed", help="random seed"),
    overrides: list[str] = typer.Option([], "--set", help="any config key, e.g. --set optim.weight_decay=0.01"),
    resume_job: str = typer.Option(None, "--resume", help="continue a killed job (id, name or folder)"),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="do not record the job in MLflow"),
    tracking_uri: str = tracking_uri_option(),
    profile: bool = typer.Option(
        False, "--profile", help="also record a torch.profiler window: a Chrome trace and the top operators"
    ),
    debug: str = typer.Option(None, "--debug", help="debugger: off, light (default) or full (see `kennel debug`)"),
    processes: int = typer.Option(
        None,
        "--processes",
        min=1,
        help="train with N processes on this machine (torchrun and PyTorch's distributed data parallel; gloo on "
        "CPU). "
        "--batch-size stays the global batch",
    ),
    gpus: int = typer.Option(None, "--gpus", min=1, help="train on N GPUs of this machine: one process per GPU"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved config and exit"),
    as_json: bool = typer.Option(False, "--json", help="print the job record as JSON on the last line"),
) -> None:
    """Fine-tune a pretrained backbone on a dataset: log metrics, checkpoint, evaluate on test, export the model.

    Precedence: defaults, then --config FILE, then flags. Metric lines on stdout look like
    `\\[epoch 3/20] train_loss=0.41 valid_accuracy=0.913;` for a regex to read.
    """
    from kennel.config import config_to_yaml, load_config, parse_assignments
    from kennel.distributed import from_environment
    from kennel.home import use_tracking_uri
    from kennel.job import resume, train
    from kennel.launch import tell_launcher

    use_tracking_uri(tracking_uri)
    launching = bool(processes or gpus) and not print_config
    try:
        if resume_job:
            if launching:
                raise typer.Exit(_launch(_resumed_config(resume_job), processes, gpus, device))
            record = resume(resume_job, heatmaps="later")
        else:
            flags: dict[str, object] = {
                **sagemaker_env(),
                "data.root": str(data) if data else None,
                "model.backbone": model,
                "model.weights": str(weights) if weights else None,
                "model.freeze": freeze,
                "epochs": epochs,
                "optim.lr": lr if lr is not None else learning_rate,
                "data.batch_size": batch_size if batch_size is not None else batch_size_underscored,
                "optim.name": optimizer,
                "data.augment": augment,
                "feature_views": views,
                "tta": tta,
                "stage_cache": stage_cache or None,
                "device": device,
                "engine.backend": engine,
                "engine.precision": precision,
                "name": name,
                "seed": seed,
                "debug.preset": debug,
            }
            if no_tracking:
                flags["tracking"] = False
            if profile:
                flags["profiler.trace.enabled"] = True
            flags.update(parse_assignments(overrides))
            config = load_config(config_file, flags, recipe=recipe)
            if print_config:
                typer.echo(config_to_yaml(config), nl=False)
                return
            if launching:
                raise typer.Exit(_launch(config, processes, gpus, device))
            record = train(config, heatmaps="later")
    except KeyboardInterrupt:
        # The record says "stopped" and the last epoch's checkpoint is on disk. Under torchrun the launcher
        # says so, once for all the ranks.
        if not from_environment().distributed:
            typer.secho("stopped; `kennel train --resume latest` continues from the last finished epoch", err=True)
        raise typer.Exit(130) from None
    if not from_environment().is_main:  # under torchrun, rank 0 reports for the job
        raise typer.Exit(0 if record.status in ("completed", "stopped", "pruned") else 1)
    _export_sagemaker_outputs(record)
    metrics = record.metrics
    summary = f"job {record.id} {record.status}"
    if "test_accuracy" in metrics:
        summary += f": test_accuracy={metrics['test_accuracy']:.4f} test_top5={metrics['test_top5']:.4f}"
    if record.stop_reason:
        summary += f" ({record.stop_reason})"
    typer.secho(fitted(summary, sys.stderr), err=True, fg="green" if record.status == "completed" else "yellow")
    typer.echo(f"model: {record.artifact}", err=True)
    if as_json:
        typer.echo(json.dumps(record.to_dict(), default=str))
    if record.status not in ("completed", "stopped"):
        raise typer.Exit(1)
    if from_environment().distributed and tell_launcher(record.path):
        return  # torchrun would take exit 3 for a failed rank: the launcher reads the record and exits 3 itself
    code = _rule_exit(record)
    if code:
        raise typer.Exit(code)


def _rule_exit(record) -> int:
    """:data:`STOPPED_BY_RULE`, naming the rule and the command that shows why, when a rule stopped the job;
    else 0."""
    stopped_by = _stopping_rule(record)
    if stopped_by is None:
        return 0
    rule, command = stopped_by
    print_stopped_by(rule, command, record.id)
    return STOPPED_BY_RULE


def _stopping_rule(record) -> tuple[str, str] | None:
    """``("debugger rule LossNotDecreasing", "debug")`` when a rule stopped the job: the rule and the command
    that shows its finding; None when the job completed or early stopping ended it. The rule runner names the
    rule at the start of the stop reason (:meth:`kennel.rules.RuleRunner.run`), the record's one trace of it."""
    from kennel.debugger.rules import DEBUGGER_RULES
    from kennel.profiler.rules import PROFILER_RULES

    if record.status != "stopped" or not record.stop_reason:
        return None
    named = record.stop_reason.partition(":")[0]
    kind, _, rule = named.rpartition(" ")
    command = {DEBUGGER_RULES.kind: "debug", PROFILER_RULES.kind: "profile"}.get(kind)
    return (named, command) if command and rule else None


def _resumed_config(ref: str):
    from kennel.config import load_config
    from kennel.jobs import load_job

    return load_config(load_job(ref).folder.config_file)


def _launch(config, processes: int | None, gpus: int | None, device_flag: str | None) -> int:
    """Run this same command under torchrun with one process per GPU (``--gpus``) or ``--processes`` of them;
    returns the exit status one process would have: torchrun's, or 3 when a rule stopped the job. What would
    fail in every rank fails here, once, as a ConfigError."""
    import subprocess
    import sys
    import tempfile

    import torch

    from kennel.config import ConfigError
    from kennel.distributed import Ranks, per_rank_batch
    from kennel.job import resolve_device
    from kennel.job.build import fetch_job_weights
    from kennel.jobs import load_job
    from kennel.launch import launched_job, process_env, torchrun_command, without_options

    if processes and gpus and processes != gpus:
        raise ConfigError(f"--processes {processes} and --gpus {gpus} disagree; give one of them")
    count = gpus or processes
    visible = torch.cuda.device_count()
    if gpus and visible < gpus:
        raise ConfigError(
            f"--gpus {gpus}: this machine has {visible} CUDA GPU(s); use --processes N for CPU processes (gloo)"
        )
    cuda = resolve_device("cuda" if gpus else config.device).type == "cuda"  # resolve_device: no GPU at all
    if cuda and visible < count:
        raise ConfigError(f"{count} processes on CUDA need a GPU each; this machine has {visible}")
    try:
        per_rank_batch(config.data.batch_size, Ranks(world_size=count))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    fetch_job_weights(config)  # once, here: not a download by every rank at once

    argv = without_options(sys.argv[1:])
    if gpus and device_flag is None:
        argv += ["--device", "cuda"]
    command = torchrun_command(argv, count)
    typer.echo(f"launching {count} training processes: {' '.join(command[1:])}", err=True)
    with tempfile.TemporaryDirectory(prefix="kennel-launch-") as folder:
        job_file = Path(folder) / "job"
        process = subprocess.Popen(command, env=process_env(count, cuda, job_file))
        try:
            code = process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached torchrun too, which stops the ranks; rank 0 has marked the job stopped.
            process.wait()
            typer.secho("stopped; `kennel train --resume latest` continues from the last finished epoch", err=True)
            return 130
        job = launched_job(job_file) if code == 0 else None
    return _rule_exit(load_job(job)) if job is not None else code

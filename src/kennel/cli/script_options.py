"""The options that name a user's script and what it gets, shared by ``kennel run`` and ``kennel tune --script``
(SageMaker's estimator arguments: source_dir, the channels of fit(), hyperparameters, metric_definitions)."""

from __future__ import annotations

import typer

SOURCE_DIR = typer.Option(
    None, "--source-dir", help="the script's folder, copied with the job and run from (SageMaker's source_dir)"
)
CHANNELS = typer.Option([], "--channel", help="a data channel, NAME=DIR: the script reads SM_CHANNEL_NAME (repeatable)")
HYPERPARAMETERS = typer.Option(
    [], "--hp", help="a hyperparameter, NAME=VALUE: the script gets --NAME VALUE (repeatable)"
)
METRICS = typer.Option(
    [], "--metric", help="NAME=REGEX: a metric read from the script's log lines, its first group (repeatable)"
)
METRIC_DEFINITIONS = typer.Option(
    None, "--metric-definitions", help="a JSON or YAML file of SageMaker metric_definitions: [{Name, Regex}]"
)

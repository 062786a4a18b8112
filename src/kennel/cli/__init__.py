"""The ``kennel`` command line. Each sub-module adds its commands; heavy imports stay inside commands."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="kennel",
    help="Train, tune, debug, profile and serve image classifiers on your own hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="log details to stderr")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def tracking_uri_option() -> typer.models.OptionInfo:
    """``--tracking-uri``, on every command that records jobs in MLflow."""
    return typer.Option(
        None,
        "--tracking-uri",
        help="MLflow store or tracking server the jobs are recorded in, e.g. http://mlflow.lan:5000 "
        "(default: $KENNEL_TRACKING_URI, else $MLFLOW_TRACKING_URI, else SQLite in $KENNEL_HOME)",
    )


def _register() -> None:
    # Each module registers its own commands on ``app`` when imported; the order is the order in --help.
    from kennel.cli import data, debug, demo, doctor, jobs, models, predict, profile, report, serve, train, tune, ui  # noqa: F401


def main() -> None:
    """The ``kennel`` command. An expected failure (:class:`~kennel.errors.KennelError`) that a command did not
    handle itself ends here as one line and its exit code; ``KENNEL_DEBUG_ERRORS=1`` shows the traceback."""
    import os
    import sys

    from kennel.errors import KennelError

    _register()
    try:
        app()
    except KennelError as exc:
        if os.environ.get("KENNEL_DEBUG_ERRORS"):
            raise
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)

"""The ``kennel`` Typer app: its root options, the options several commands share, and the one place where an
expected failure (:class:`~kennel.errors.KennelError`) becomes a line on stderr and an exit code."""

from __future__ import annotations

import logging

import click
import typer
from typer.core import TyperGroup

from kennel.cli.output import print_error
from kennel.errors import EXIT_CODES, KennelError


class KennelGroup(TyperGroup):
    """The root command group. Its ``invoke`` runs every command, so an error caught here is caught once for all
    of them, the same under ``kennel`` and under a test's ``CliRunner``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KennelError as exc:
            if ctx.params.get("debug_errors"):
                raise
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="kennel",
    cls=KennelGroup,
    help="Train, tune, debug, profile and serve image classifiers on your own hardware.",
    epilog=f"Exit codes, the same in every command: {EXIT_CODES}. An expected failure is one line, error: ...",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log details to stderr"),
    debug_errors: bool = typer.Option(
        False,
        "--debug-errors",
        envvar="KENNEL_DEBUG_ERRORS",
        help="show the traceback of an expected error (a bad value, a missing file) instead of its one line",
    ),
) -> None:
    # --debug-errors is read by KennelGroup.invoke, from the context, when a command fails.
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

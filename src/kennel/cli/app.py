"""The ``kennel`` Typer app: its root options, the options several commands share, and the one place where an
expected failure (:class:`~kennel.errors.KennelError`) or a command line Click cannot parse becomes a line on
stderr and an exit code."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterator

import click
import typer
from typer import core as typer_core
from typer.core import TyperGroup

from kennel.cli.output import print_error
from kennel.errors import EXIT_CODES, KennelError

# Click's errors as Typer raises them: Typer carries its own copy of Click (typer._click) where it has one.
_CLICK = getattr(typer_core, "_click", click)
USAGE_ERRORS = tuple({click.exceptions.UsageError, _CLICK.exceptions.UsageError})
NO_ARGS_IS_HELP = tuple(
    found for found in (getattr(m.exceptions, "NoArgsIsHelpError", None) for m in {click, _CLICK}) if found
)


def say_usage_error(error: click.UsageError) -> None:
    """``error: MESSAGE`` and the command's usage line on stderr, in place of Typer's box."""
    message = error.format_message().strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    print_error(message)
    ctx = getattr(error, "ctx", None)
    if ctx is not None:
        usage = ctx.get_usage().strip()
        usage = usage.split(":", 1)[1].strip() if usage.lower().startswith("usage:") else usage
        typer.echo(f"usage: {usage}", err=True)


def _commands(command: click.Command) -> Iterator[click.Command]:
    """``command`` and every command under it."""
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def plain_flags(command: click.Command) -> None:
    """No ``<bool>`` beside a flag in ``--help`` (nor beside ``-h`` itself): a flag takes no value, so there is no
    type to show."""
    context = _CLICK.core.Context(command, help_option_names=["-h", "--help"])
    for param in [*command.params, command.get_help_option(context)]:
        if param is not None and getattr(param, "is_flag", False):
            param.metavar = ""


def flowing_help(command: click.Command) -> None:
    """Each paragraph of ``command``'s help as one line, for the terminal to fold at its own width: Typer keeps a
    docstring's line breaks after its first paragraph, and lines broken for 120 columns, folded again at 80, left a
    few words alone on every other line."""
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(paragraph.split("\n")) for paragraph in paragraphs)


class KennelGroup(TyperGroup):
    """The root command group. Its ``invoke`` runs every command, so an error caught here is caught once for all
    of them, the same under ``kennel`` and under a test's ``CliRunner``: an expected failure is one ``error:``
    line, and so is a command line that cannot be parsed (with the usage line under it, exit code 2)."""

    def make_context(self, info_name, args, parent=None, **extra):
        for command in _commands(self):  # not in __init__: Typer adds its completion flags to the root after it
            plain_flags(command)
            flowing_help(command)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except USAGE_ERRORS as exc:  # the root's own options: kennel --bogus, or no command at all
            if isinstance(exc, NO_ARGS_IS_HELP):
                raise
            say_usage_error(exc)
            raise typer.Exit(exc.exit_code) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KennelError as exc:
            if ctx.params.get("debug_errors"):
                raise
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except USAGE_ERRORS as exc:  # a command's arguments: a missing one, an unknown option, a bad value
            if isinstance(exc, NO_ARGS_IS_HELP):
                raise
            say_usage_error(exc)
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
    from kennel.lines import FoldingFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FoldingFormatter("%(levelname)s %(name)s: %(message)s"))  # folded at words, to fit
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def tracking_uri_option() -> typer.models.OptionInfo:
    """``--tracking-uri``, on every command that records jobs in MLflow."""
    return typer.Option(
        None,
        "--tracking-uri",
        help="MLflow store or tracking server the jobs are recorded in, e.g. http://mlflow.lan:5000 "
        "(default: $KENNEL_TRACKING_URI, else $MLFLOW_TRACKING_URI, else SQLite in $KENNEL_HOME)",
    )

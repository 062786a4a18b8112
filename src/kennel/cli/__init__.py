"""The ``kennel`` command line. :mod:`kennel.cli.app` holds the Typer app and its error edge; each command module
adds its commands to it when imported here, and keeps its heavy imports (torch, mlflow, rich) inside the
commands, so that ``kennel --help`` stays fast."""

from __future__ import annotations

# Imported for the commands they add; the order is the order of the commands in --help.
from kennel.cli import (  # noqa: F401
    data,
    debug,
    demo,
    doctor,
    export,
    jobs,
    models,
    monitor,
    predict,
    profile,
    report,
    serve,
    train,
    tune,
    ui,
)
from kennel.cli.app import app as kennel_app


def main() -> None:
    """The ``kennel`` command; an expected failure ends as one line and its exit code (see :mod:`kennel.errors`)."""
    kennel_app()

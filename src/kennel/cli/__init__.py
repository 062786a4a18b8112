"""The ``kennel`` command line. :mod:`kennel.cli.app` holds the Typer app and its error edge; each command module
adds its commands to it when imported here, and keeps its heavy imports (torch, mlflow, rich) inside the
commands, so that ``kennel --help`` stays fast."""

from __future__ import annotations

import sys

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
    run,
    serve,
    train,
    tune,
    ui,
)
from kennel.cli.app import app as kennel_app


def main() -> None:
    """The ``kennel`` command; an expected failure ends as one line and its exit code (see :mod:`kennel.errors`)."""
    try:
        kennel_app()
    except SystemExit as done:
        _end_rank(done.code if isinstance(done.code, int) or done.code is None else 1)
        raise
    except BaseException:
        if _finished_rank() is not None:  # what Python would print, before the rank ends without finalizing
            import traceback

            traceback.print_exc()
            _end_rank(1)
        raise


def _finished_rank():
    """:mod:`kennel.distributed` when this process was a torchrun rank and has left its job's process group,
    else None. Looked up, not imported: a command that never trained need not import PyTorch."""
    distributed = sys.modules.get("kennel.distributed")
    return distributed if distributed is not None and distributed.left_group() else None


def _end_rank(code: int | None) -> None:
    """A rank whose job is written ends here, without finalizing (:func:`kennel.distributed.end_process`); any
    other process returns and exits as usual."""
    distributed = _finished_rank()
    if distributed is not None:
        distributed.end_process(code or 0)

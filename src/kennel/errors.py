"""The base of kennel's expected failures: what a person can fix (a bad value, a missing file), said in one line.

The command line catches :class:`KennelError` once, at its edge (:mod:`kennel.cli.app`): it prints
``error: MESSAGE`` and exits with the error's ``exit_code``. Anything else is a bug and keeps its traceback;
``kennel --debug-errors ...`` or ``KENNEL_DEBUG_ERRORS=1`` shows the traceback of an expected failure too.

Exit codes, the same in every command:

- 0: done.
- 1: the work failed: a job or trial failed, an endpoint is unreachable or answered an error, a file is missing
  or cannot be read or written, a download failed, the port is taken, a photo of a batch could not be predicted.
- 2: the request cannot be used as given: a bad option or config value (``--set``, a YAML file, a dataset
  folder the config names that does not exist), an unknown key or name (job, study, backbone, dataset,
  backend), options that contradict each other, a backbone whose weights are neither on this machine nor
  downloadable. Typer's own usage errors exit 2 as well.
- 3 (:data:`STOPPED_BY_RULE`): ``kennel train``'s job was stopped by a debugger or profiler rule with ``stop``
  set. It is no error (the model is kept), but a script should not take it for a job that ran its course.
- 130: stopped with Ctrl-C; ``--resume`` (jobs) or ``--study`` (studies) continues.

A class says its kind by its base: :class:`UsageError` (2) or :class:`Failure` (1). :class:`KennelError` itself
exits 2, since most of the errors that subclass it directly name a bad value.
"""

from __future__ import annotations

from pathlib import Path

STOPPED_BY_RULE = 3
EXIT_CODES = "0 done, 1 the work failed, 2 a request it cannot use, 3 a job stopped by a rule, 130 interrupted"


class KennelError(Exception):
    """An expected failure; the message names the thing and what was expected of it."""

    exit_code = 2


class UsageError(KennelError):
    """A value, option or name the person gave that cannot be used."""

    exit_code = 2


class Failure(KennelError):
    """The request was fine, but the work could not be done."""

    exit_code = 1


class PathError(Failure):
    """A file or folder the person named that is missing, or cannot be read or written. The message names the
    path once: ``photo.jpg: no such file``."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)

    @classmethod
    def of(cls, error: OSError, doing: str = "", path: Path | str | None = None) -> PathError:
        """An ``OSError`` about one path, said once: ``report.html: cannot write the report: permission denied``.
        ``path`` stands in where the error names none."""
        reason = error.strerror or str(error)
        reason = reason[:1].lower() + reason[1:]
        where = error.filename if error.filename is not None else (path if path is not None else "")
        return cls(where, f"{doing}: {reason}" if doing else reason)


class PortInUse(Failure):
    """The address a server was to listen on is taken (``OSError`` errno ``EADDRINUSE``)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is in use by another process; choose another with --port")
        self.host, self.port = host, port

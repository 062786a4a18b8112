"""What ``kennel serve`` checks before the model loads, so that a folder it cannot write or a port it cannot
listen on is one line at once, not a log record once the server is up."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from kennel.errors import Failure, PathError, PortInUse, UsageError


def writable_folder(folder: Path, flag: str) -> Path:
    """``folder``, made if missing, or a one-line error now: the server would fail only once the model loaded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError.of(exc, f"{flag}: cannot make the folder", folder) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(folder, f"{flag}: not writable by this user")
    return folder


def check_port(host: str, port: int) -> None:
    """Fail now, in a line, when the server could not listen at ``host:port``. uvicorn binds only after the
    model has loaded, and then says so in a log record among others."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"--host {host}: not an address of this machine") from None
            if exc.errno == errno.EACCES:
                raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise

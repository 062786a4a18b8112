"""Is the process that wrote a record still there? A job or study whose record says "running" while its process
is gone was killed (kill -9, a reboot) and says so, rather than running forever."""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether process ``pid`` on ``host`` (None: this one) still runs; another host's processes are assumed
    alive, since nothing here can ask that machine."""
    if pid is None:
        return False
    if host not in (None, this_host()):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True

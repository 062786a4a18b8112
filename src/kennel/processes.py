"""This machine's processes: is the one that wrote a record still there (a job or study whose record says
"running" while its process is gone was killed, and says so, rather than running forever), and how many cores
may this one use."""

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


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

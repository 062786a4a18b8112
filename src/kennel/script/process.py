"""The user's script in a process of its own: started in its own session (so a stop reaches every process it
started: torchrun's ranks, DataLoader workers), ended with it if kennel dies, its two streams passed through to
the terminal as they come, kept in the job's logs and cut into lines for whoever reads them (the metrics)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

log = logging.getLogger(__name__)

LineReader = Callable[[str, str], None]  # (line, "stdout" | "stderr")
TAIL_LINES = 400  # of stderr, read for why a script failed (a chained traceback runs to a hundred lines)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: the script gets SIGTERM when kennel dies (even of SIGKILL), so no run outlives its job."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ScriptProcess:
    """``start()``, then ``wait()``; ``stop()`` from any thread. ``read`` gets every complete line of either
    stream (a carriage return ends a line too: progress bars redraw with it)."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        logs: tuple[Path, Path],
        read: LineReader,
        echo: bool = True,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.cwd = Path(cwd)
        self.logs = logs
        self.read = read
        self.echo = echo
        self.process: subprocess.Popen | None = None
        self.stderr_tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.output_tail: deque[str] = deque(maxlen=TAIL_LINES)  # both streams, as the lines came
        self.stopped_with: str | None = None  # why kennel ended the script, if it did
        self._readers: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        for name, pipe, log_path in (
            ("stdout", self.process.stdout, self.logs[0]),
            ("stderr", self.process.stderr, self.logs[1]),
        ):
            thread = threading.Thread(target=self._pump, args=(name, pipe, log_path), name=f"kennel-script-{name}")
            thread.start()
            self._readers.append(thread)

    def _terminal(self, name: str) -> TextIO:
        # Looked up at each write: a test or a notebook may have swapped sys.stdout since kennel started.
        return sys.stdout if name == "stdout" else sys.stderr

    def _pump(self, name: str, pipe: BinaryIO, log_path: Path) -> None:
        pending = b""
        with open(log_path, "ab") as saved:
            while True:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                saved.write(chunk)
                saved.flush()
                if self.echo:
                    self._write_terminal(name, chunk)
                pending += chunk
                *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    self._line(name, line)
        if pending:
            self._line(name, pending)
        pipe.close()

    def _write_terminal(self, name: str, chunk: bytes) -> None:
        stream = self._terminal(name)
        with self._lock:
            try:
                buffer = getattr(stream, "buffer", None)
                if buffer is not None:
                    stream.flush()
                    buffer.write(chunk)
                    buffer.flush()
                else:
                    stream.write(chunk.decode("utf-8", errors="replace"))
                    stream.flush()
            except (OSError, ValueError):  # the terminal went away (a closed pipe): the logs still keep it all
                self.echo = False

    def _line(self, name: str, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if line.strip():
            self.output_tail.append(line)
            if name == "stderr":
                self.stderr_tail.append(line)
        try:
            self.read(line, name)
        except Exception:  # a reader's bug must not stop the script's output
            log.warning("reading a line of the script's %s failed", name, exc_info=True)

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def wait(self, timeout: float | None = None) -> int:
        """The script's exit status (negative: the signal that ended it), once its output is all read."""
        code = self.process.wait(timeout=timeout)
        self._end_stragglers()
        for thread in self._readers:
            thread.join()
        return code

    def _end_stragglers(self) -> None:
        """Processes the script started and left behind (a loader worker, a rank) hold its pipes open: they end
        with it, as they would when SageMaker's container stops."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, reason: str, grace_s: float = 10.0, first: int = signal.SIGTERM) -> None:
        """End the script: ``first`` (SIGTERM, or SIGINT for Ctrl-C) to its whole session, SIGKILL after
        ``grace_s`` seconds if it is still there. ``reason`` is kept in :attr:`stopped_with`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.stopped_with = self.stopped_with or reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, first)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

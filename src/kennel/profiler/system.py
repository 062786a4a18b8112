"""System metrics: a daemon thread samples the machine and the job's processes every ``interval_s`` seconds.

Each sample reads a handful of ``/proc`` files through psutil (well under a millisecond): CPU per core and I/O
wait for the machine, memory, disk and network rates, and for the job's own processes (this one and its
descendants, the loader workers; under torchrun every local rank, found from the launcher) CPU, resident memory
and I/O. The job's descendants are found through
``/proc/PID/task/TID/children``, never by walking every process on the machine. On CUDA jobs NVML adds GPU
utilisation, memory and power.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from kennel.jsonl import append_jsonl
from kennel.profiler.gpu import GpuReader

log = logging.getLogger(__name__)
MB = 2**20


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread may have forked some)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            kids += [int(part) for part in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return kids


class JobProcesses:
    """This process and its descendants, each kept as one ``psutil.Process`` so CPU and I/O are deltas.

    With a ``launcher`` (torchrun's agent, whose children are the job's ranks on this machine) the CPU, memory
    and I/O are those of the launcher's whole tree: every rank and its loader workers. ``children`` stays this
    process's own: its loader workers."""

    def __init__(self, pid: int | None = None, launcher: int | None = None) -> None:
        self.root = psutil.Process(pid)
        self.launcher = launcher
        self._known: dict[int, psutil.Process] = {self.root.pid: self.root}
        self._io: dict[int, tuple[int, int]] = {}
        self._proc_children = Path(f"/proc/{self.root.pid}/task/{self.root.pid}/children").exists()

    def _descendants(self, pid: int) -> list[int]:
        if not self._proc_children:  # kernels without CONFIG_PROC_CHILDREN: psutil walks the process table
            try:
                return [p.pid for p in psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                return []
        found, todo = [], [pid]
        while todo:
            kids = _children(todo.pop())
            found += kids
            todo += kids
        return found

    def sample(self) -> dict[str, float]:
        own = [self.root.pid, *self._descendants(self.root.pid)]
        pids = own if self.launcher is None else self._descendants(self.launcher)
        cpu = rss = read = written = 0.0
        alive = 0
        for pid in pids:
            process = self._known.get(pid)
            try:
                if process is None:
                    process = self._known[pid] = psutil.Process(pid)
                cpu += process.cpu_percent()  # 0.0 on its first sample
                rss += process.memory_info().rss
                read_bytes, write_bytes = self._io_delta(process)
                read, written = read + read_bytes, written + write_bytes
                alive += 1
            except psutil.Error:
                self._known.pop(pid, None)
        for gone in set(self._known) - set(pids):
            self._known.pop(gone, None)
            self._io.pop(gone, None)
        children = sum(1 for pid in own[1:] if pid in self._known) if self.launcher else alive - 1
        return {"cpu": cpu, "rss": rss, "read": read, "write": written, "children": children}

    def _io_delta(self, process: psutil.Process) -> tuple[int, int]:
        try:
            counters = process.io_counters()
        except (psutil.AccessDenied, AttributeError, NotImplementedError):
            return 0, 0
        now = (counters.read_bytes, counters.write_bytes)
        before = self._io.get(process.pid, now)
        self._io[process.pid] = now
        return now[0] - before[0], now[1] - before[1]


class SystemSampler:
    """Samples every ``interval_s`` on a daemon thread; each sample is appended to ``path`` as it is taken and
    the last ``keep`` stay in :attr:`samples` for the rules that run while the job does."""

    def __init__(
        self,
        path: Path,
        interval_s: float = 0.5,
        gpus: GpuReader | None = None,
        keep: int = 20_000,
        launcher: int | None = None,
    ):
        self.path = Path(path)
        self.interval_s = interval_s
        self.gpus = gpus
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self._processes = JobProcesses(launcher=launcher)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, Any, Any] | None = None

    def start(self) -> None:
        self._prime()
        self._thread = threading.Thread(target=self._run, name="kennel-system-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take one last sample, so even a job shorter than the interval has one."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._record()
        if self.gpus is not None:
            self.gpus.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._record()

    def _record(self) -> None:
        try:
            sample = self.sample()
        except Exception:  # a metric that cannot be read must never stop the job
            log.warning("system sample failed", exc_info=True)
            return
        self.samples.append(sample)
        try:
            append_jsonl(self.path, [sample])
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def _prime(self) -> None:
        """The first reading of every delta-based counter (CPU percentages, I/O), discarded."""
        psutil.cpu_times_percent(percpu=True)
        self._processes.sample()
        self._last = (time.monotonic(), psutil.disk_io_counters(), psutil.net_io_counters())

    def sample(self) -> dict[str, Any]:
        """One sample: rates and percentages since the previous one."""
        now = time.monotonic()
        cores = psutil.cpu_times_percent(percpu=True)
        memory = psutil.virtual_memory()
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        job = self._processes.sample()
        before, disk_before, net_before = self._last or (now, disk, net)
        self._last = (now, disk, net)
        seconds = max(now - before, 1e-6)

        def rate(after: Any, earlier: Any, name: str) -> float | None:
            if after is None or earlier is None:  # no disk or network counters on this machine
                return None
            return round((getattr(after, name) - getattr(earlier, name)) / MB / seconds, 3)

        sample: dict[str, Any] = {
            "t": round(time.time(), 3),
            "cpu": [round(100.0 - c.idle - getattr(c, "iowait", 0.0), 1) for c in cores],
            "iowait": round(sum(getattr(c, "iowait", 0.0) for c in cores) / max(len(cores), 1), 2),
            "mem": memory.percent,
            "mem_used_mb": round((memory.total - memory.available) / MB, 1),
            "proc_cpu": round(job["cpu"], 1),
            "proc_rss_mb": round(job["rss"] / MB, 1),
            "proc_read_mb_s": round(job["read"] / MB / seconds, 3),
            "proc_write_mb_s": round(job["write"] / MB / seconds, 3),
            "workers": job["children"],
            "disk_read_mb_s": rate(disk, disk_before, "read_bytes"),
            "disk_write_mb_s": rate(disk, disk_before, "write_bytes"),
            "net_sent_mb_s": rate(net, net_before, "bytes_sent"),
            "net_recv_mb_s": rate(net, net_before, "bytes_recv"),
        }
        if self.gpus is not None:
            sample["gpus"] = self.gpus.read()
        return sample

"""What this machine is: measurements of speed are only trusted on the CPU, libraries and device they were
taken on, so every stored choice is keyed by these facts."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.processes import available_cores

if TYPE_CHECKING:
    import torch

# The instruction sets that decide which inference path is fast: AVX2/FMA (most laptops), AVX-512 and its VNNI
# (int8 dot products), native bf16 (AVX512-BF16, AMX) and Intel's AMX tiles.
SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
LIBRARIES = ("torch", "onnxruntime", "onnxruntime-openvino", "openvino")
# Speeds timed while other processes used more than this share of this process's cores are provisional: their
# work slows each backend unevenly (the int8 path more than fp32, say), so the choice may be wrong.
BUSY_SHARE = 0.25
QUIET_CHECK_S = 0.5  # how long a start looks at the machine before timing again figures taken on a busy one


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> tuple[str, ...]:
    """The speed-relevant instruction sets this CPU has (empty where /proc/cpuinfo is not there)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            present = set(line.partition(":")[2].split())
            return tuple(flag for flag in SPEED_FLAGS if flag in present)
    return ()


def saturates_int8() -> bool:
    """Whether ONNX Runtime's int8 kernels here multiply uint8 by int8 with AVX2's pairwise add (``vpmaddubsw``),
    whose 16-bit sums saturate with full-range weights: an x86 CPU without VNNI. Weights quantized to 7 bits
    cannot saturate it (ONNX Runtime's ``reduce_range``); with VNNI the sums are 32-bit."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    flags = cpu_flags()
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def has_native_bf16() -> bool:
    """bf16 matmuls are fast only where the CPU has AVX512-BF16 or AMX; elsewhere they are emulated (slower than
    fp32)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cores() -> int:
    return available_cores()


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``count`` for the block (None: left as they are), as before after it."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class CpuSample:
    """The CPU time spent so far on this process's cores by everything (None where ``/proc/stat`` is not there)
    and by this process itself, at a moment."""

    at: float
    everything: float | None
    own: float


def _busy_seconds() -> float | None:
    """Seconds the CPUs this process may run on have been busy since boot, from ``/proc/stat``."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or (allowed is not None and int(name[3:]) not in allowed):
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in rest.split()[:8])
        ticks += user + nice + system + irq + softirq + steal  # steal: a hypervisor's other guests, also busy
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_sample() -> CpuSample:
    times = os.times()
    return CpuSample(time.monotonic(), _busy_seconds(), times.user + times.system)


def others_busy(start: CpuSample, end: CpuSample | None = None) -> float:
    """How many of this process's cores other processes kept busy between ``start`` and ``end`` (now): the CPU
    time of those cores less this process's own, per second. Where ``/proc/stat`` is not there, the 1-minute load
    average less this process's own share."""
    end = end or cpu_sample()
    seconds = max(end.at - start.at, 1e-3)
    own = (end.own - start.own) / seconds
    if start.everything is None or end.everything is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(0.0, load - own)
    return max(0.0, (end.everything - start.everything) / seconds - own)


def busy(others: float) -> bool:
    """Whether other processes' use of the cores (:func:`others_busy`) makes timings here provisional."""
    return others > BUSY_SHARE * cores()


def quiet(seconds: float = QUIET_CHECK_S) -> bool:
    """Whether the machine is quiet now: other processes kept less than :data:`BUSY_SHARE` of the cores busy over
    the next ``seconds``."""
    start = cpu_sample()
    time.sleep(seconds)
    return not busy(others_busy(start))


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return "cpu"


def facts(device: torch.device) -> dict[str, object]:
    """Everything a measured speed depends on besides the model: CPU, cores, libraries, device."""
    return {
        "cpu": cpu_model(),
        "flags": list(cpu_flags()),
        "cores": cores(),
        "libraries": library_versions(),
        "device": device_name(device),
    }


def machine_key(device: torch.device) -> str:
    payload = json.dumps(facts(device), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def describe_cpu() -> str:
    """``AMD EPYC 9B14, 2 cores; avx2 fma avx512f avx512_vnni avx512_bf16``: the line every timing is printed with."""
    flags = " ".join(cpu_flags()) or "no AVX2"
    return f"{cpu_model()}, {cores()} cores; {flags}"

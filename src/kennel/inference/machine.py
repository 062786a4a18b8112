"""What this machine is: measurements of speed are only trusted on the CPU, libraries and device they were
taken on, so every stored choice is keyed by these facts."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

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


def has_native_bf16() -> bool:
    """bf16 matmuls are fast only where the CPU has AVX512-BF16 or AMX; elsewhere they are emulated (slower than
    fp32)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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

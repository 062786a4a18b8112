"""NVIDIA GPU metrics through NVML (the ``nvidia-ml-py`` package), imported only when a job runs on CUDA."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def _visible(count: int) -> list[int]:
    """The NVML indices of the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` as integers, else all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    try:
        return [i for i in (int(part) for part in visible.split(",") if part.strip()) if 0 <= i < count]
    except ValueError:  # UUIDs or MIG names: read them all rather than guess
        return list(range(count))


class GpuReader:
    """Utilisation (%), memory (% and MB) and power (W) of each visible GPU."""

    def __init__(self, nvml: Any, handles: list[Any], names: list[str]) -> None:
        self.nvml = nvml
        self.handles = handles
        self.names = names

    @classmethod
    def open(cls) -> GpuReader | None:
        """A reader, or None (with a log line) where NVML or its library is missing."""
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in _visible(pynvml.nvmlDeviceGetCount())]
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, a driver mismatch
            log.info("no GPU metrics: %s", exc)
            return None
        return cls(pynvml, handles, names)

    def read(self) -> list[dict[str, float]]:
        nvml, gpus = self.nvml, []
        for handle in self.handles:
            gpu: dict[str, float] = {}
            try:
                gpu["util"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpu["mem"] = round(100.0 * memory.used / max(memory.total, 1), 2)
                gpu["mem_used_mb"] = round(memory.used / 2**20, 1)
                gpu["power_w"] = round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1)
            except nvml.NVMLError:  # e.g. power is not reported on some boards: keep what was read
                pass
            gpus.append(gpu)
        return gpus

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

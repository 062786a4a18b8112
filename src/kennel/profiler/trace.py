"""A ``torch.profiler`` window over a few training steps (wait, warmup, active): a Chrome trace that opens in
Perfetto (ui.perfetto.dev) or chrome://tracing, and the operators that took the most time.

The profiler runs only inside its window; before it the loop pays one ``step()`` call per step, after it nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from kennel.atomic import atomic_path, atomic_write_json
from kennel.config import TraceConfig

log = logging.getLogger(__name__)


def operator_table(profiler: Any, limit: int, device: bool) -> list[dict[str, Any]]:
    """The ``limit`` operators with the most self time (device time on CUDA, else CPU), in seconds."""
    rows = []
    for event in profiler.key_averages():
        rows.append(
            {
                "name": event.key,
                "calls": int(event.count),
                "self_cpu_s": event.self_cpu_time_total / 1e6,
                "cpu_total_s": event.cpu_time_total / 1e6,
                "self_device_s": getattr(event, "self_device_time_total", 0.0) / 1e6,
                "device_total_s": getattr(event, "device_time_total", 0.0) / 1e6,
            }
        )
    key = "self_device_s" if device else "self_cpu_s"
    rows.sort(key=lambda row: row[key], reverse=True)
    return rows[:limit]


class TraceWindow:
    """Call :meth:`start` before the first step, :meth:`step` after each, :meth:`stop` when the loop ends."""

    def __init__(self, folder: Path, config: TraceConfig, device: torch.device | None = None) -> None:
        self.trace_path = Path(folder) / "trace.json"
        self.operators_path = Path(folder) / "operators.json"
        self.config = config
        self.cuda = device is not None and device.type == "cuda"
        self._profiler: torch.profiler.profile | None = None
        self._done = False

    def start(self) -> None:
        if self._done or self._profiler is not None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        config = self.config
        self._profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=config.wait, warmup=config.warmup, active=config.active, repeat=1),
            on_trace_ready=self._export,
        )
        self._profiler.start()

    def step(self) -> None:
        if self._profiler is None:
            return
        if self._done:  # the window has been exported: stop paying for the profiler
            self.stop()
            return
        self._profiler.step()

    def stop(self) -> None:
        """End the window; a window cut short by the loop's end is exported with the steps it has."""
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            profiler.stop()
            self._done = True

    def _export(self, profiler: Any) -> None:
        try:
            with atomic_path(self.trace_path) as tmp:
                profiler.export_chrome_trace(str(tmp))
            atomic_write_json(self.operators_path, operator_table(profiler, self.config.top_operators, self.cuda))
        except Exception:  # a trace that cannot be written must not end the job
            log.warning("could not export the torch.profiler trace", exc_info=True)
        self._done = True

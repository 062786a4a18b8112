"""``auto``: time a few batches of every backend that can run here, keep the figures, use the fastest.

The figures are kept in the cache keyed by the machine (CPU model and flags, cores, library versions, device)
and the graph's architecture, so the next job on this machine chooses at once, and a new CPU or a new library
version is measured again. A figure timed while other processes kept the cores busy is kept as provisional (the
choice it leads to may be wrong): the next job or ``kennel doctor`` that starts on a quiet machine times it again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from kennel.atomic import atomic_write_json
from kennel.inference import machine
from kennel.inference.backends import BACKENDS, Backend
from kennel.inference.graph import FrozenGraph
from kennel.inference.store import built, store_dir
from kennel.jobs import now

log = logging.getLogger(__name__)

MEASURE_BATCH = 32
MEASURE_RUNS = 3  # timed batches per backend, after one untimed warm-up; the fastest counts
CLEAR_LOSS = 0.5  # a backend under this share of the fastest one's photos/s after its first timed batch stops there
TIMING_CALIBRATION = 4  # random images the int8 model that is timed is calibrated on (timing_graph)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


@dataclass
class Measurement:
    """One machine's figures for one architecture: photos/s of the forward pass per backend, or why not."""

    speeds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    measured: str = field(default_factory=now)
    batch_size: int = MEASURE_BATCH
    load: float | None = None  # the machine's 1-minute load average when it was measured
    provisional: list[str] = field(default_factory=list)  # backends timed while other processes kept the cores busy
    others: float | None = None  # the most cores other processes kept busy while a backend was timed, last time

    def fastest(self, names: list[str]) -> str | None:
        timed = [name for name in names if name in self.speeds]
        return max(timed, key=self.speeds.__getitem__) if timed else None


def choices_path() -> Path:
    return store_dir() / "choices.json"


def _read() -> dict:
    try:
        return json.loads(choices_path().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def stored(graph: FrozenGraph, device: torch.device) -> Measurement | None:
    entry = _read().get(machine.machine_key(device), {}).get("graphs", {}).get(graph.architecture)
    if not isinstance(entry, dict):
        return None
    known = {k: v for k, v in entry.items() if k in Measurement.__dataclass_fields__}
    try:  # written by another kennel version: measure again rather than fail
        return Measurement(**known)
    except TypeError:
        return None


def _store(graph: FrozenGraph, device: torch.device, measurement: Measurement, timed: set[str]) -> None:
    from filelock import FileLock

    path = choices_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        # Merged under the lock: another process (a tuning worker, kennel doctor) may have stored figures for
        # other backends since this one read the file.
        data = _read()
        entry = data.setdefault(machine.machine_key(device), {"machine": machine.facts(device), "graphs": {}})
        old = entry["graphs"].get(graph.architecture) or {}
        speeds = {k: v for k, v in old.get("speeds", {}).items() if k not in measurement.failures}
        failures = {k: v for k, v in old.get("failures", {}).items() if k not in measurement.speeds}
        measurement.speeds = {**speeds, **measurement.speeds}
        measurement.failures = {**failures, **measurement.failures}
        # Provisional: what this process timed on a busy machine, and what others did that it did not time again.
        kept = [name for name in old.get("provisional", []) if name not in timed and name in measurement.speeds]
        fresh = [name for name in measurement.provisional if name in timed and name in measurement.speeds]
        measurement.provisional = sorted({*kept, *fresh})
        entry["graphs"][graph.architecture] = measurement.__dict__
        atomic_write_json(path, data)


def candidates(graph: FrozenGraph, device: torch.device, precision: str = "auto") -> tuple[list[Backend], dict]:
    """The backends that can run ``graph`` here at ``precision``, and why each other one cannot."""
    usable, skipped = [], {}
    for name in BACKENDS:
        backend = BACKENDS.get(name)
        if precision != "auto" and backend.precision != precision:
            skipped[name] = f"runs at {backend.precision}"
            continue
        reason = backend.unavailable(graph, device)
        if reason is None:
            usable.append(backend)
        else:
            skipped[name] = reason
    return usable, skipped


def time_backend(
    backend: Backend,
    graph: FrozenGraph,
    device: torch.device,
    batch_size: int = MEASURE_BATCH,
    beat: float | None = None,
) -> float:
    """Photos/s of ``backend``'s forward pass over a random batch: the fastest of a few timed runs. ``beat``: the
    fastest photos/s timed so far; a backend under :data:`CLEAR_LOSS` of it after one run is timed no more (its
    figure is that run's: the choice does not turn on how much it loses by)."""
    run = backend.open(graph, device)
    batch = torch.randn(batch_size, 3, graph.input_size, graph.input_size, generator=torch.Generator().manual_seed(0))
    run(batch)  # the first call plans memory and picks kernels
    best = float("inf")
    for _ in range(MEASURE_RUNS):
        started = time.perf_counter()
        run(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
        if beat is not None and batch_size / best < CLEAR_LOSS * beat:
            break
    return batch_size / best


def timing_order(backends: list[Backend]) -> list[Backend]:
    """The order backends are timed in: lower precisions first, which where they run are usually the fastest, so
    that a slower backend timed after them is seen to lose after one batch. Every backend is still timed: the order
    decides how many batches the losers take, never which backend wins."""
    rank = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}
    return sorted(backends, key=lambda backend: rank.get(backend.precision, 2))


def timing_graph(graph: FrozenGraph) -> FrozenGraph:
    """``graph`` as its backends are timed. A static int8 model runs at the same speed whatever its calibration (the
    ranges are numbers in the same graph), so where ``graph``'s own int8 file is not built yet, int8 is timed on one
    calibrated on a few random images (:data:`TIMING_CALIBRATION`), a fraction of a job's calibration to build: the
    job's own is built only if it takes int8."""
    if graph.calibration is None or built(graph, "int8"):
        return graph
    size, generator = graph.input_size, torch.Generator().manual_seed(0)
    images = torch.randn(TIMING_CALIBRATION, 3, size, size, generator=generator)
    return replace(graph, calibration=lambda: iter([images.numpy()]), calibration_id="timing")


def measure(graph: FrozenGraph, device: torch.device, backends: list[Backend], progress=None) -> Measurement:
    """Time every backend in ``backends`` and store the figures; one that fails to open is recorded with why, and
    one timed while other processes kept the cores busy (:func:`kennel.inference.machine.busy`) as provisional."""
    timed_graph = timing_graph(graph)
    measurement = stored(graph, device) or Measurement()
    measurement.load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    provisional, others, fastest = set(measurement.provisional), [], None
    for backend in timing_order(backends):
        if progress is not None:
            progress(backend)
        provisional.discard(backend.name)
        start = machine.cpu_sample()
        try:
            speed = time_backend(backend, timed_graph, device, beat=fastest)
            measurement.speeds[backend.name] = round(speed, 1)
            fastest = max(fastest or 0.0, speed)
            measurement.failures.pop(backend.name, None)
        except Exception as exc:  # a backend that cannot run this graph is skipped, not fatal
            log.info("backend %s cannot run %s: %s", backend.name, graph.architecture, exc)
            measurement.failures[backend.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            measurement.speeds.pop(backend.name, None)
            continue
        others.append(machine.others_busy(start))
        if machine.busy(others[-1]):
            provisional.add(backend.name)
    measurement.others = round(max(others), 2) if others else None
    timed_busy = sorted(provisional & {backend.name for backend in backends})
    if timed_busy:
        log.warning(
            "timed %s while other processes kept %.1f of %d cores busy: the figures are provisional, and the next "
            "job or kennel doctor on a quiet machine times them again",
            ", ".join(timed_busy),
            measurement.others,
            machine.cores(),
        )
    measurement.provisional = sorted(provisional)
    measurement.measured = now()
    _store(graph, device, measurement, {backend.name for backend in backends})
    return measurement


def unmeasured(
    graph: FrozenGraph,
    device: torch.device,
    backends: list[Backend],
    remeasure: bool = False,
    known: Measurement | None = None,
) -> list[Backend]:
    """Those of ``backends`` this machine has no figure (or failure) for yet, and those whose figure is provisional
    when the machine is quiet now; all of them with ``remeasure``. ``known``: the stored figures, where the caller
    has read them already."""
    known = known if known is not None else stored(graph, device)
    done = set() if remeasure or known is None else {*known.speeds, *known.failures}
    missing = [b for b in backends if b.name not in done]
    again = [b for b in backends if b.name in done and known is not None and b.name in known.provisional]
    if again and machine.quiet():
        log.info("the machine is quiet: timing again %s, measured on a busy one", ", ".join(b.name for b in again))
        missing += again
    return missing


def figures(graph: FrozenGraph, device: torch.device, backends: list[Backend], remeasure: bool = False) -> Measurement:
    """The stored figures for ``backends``, measuring those not measured yet on this machine (or all of them)."""
    known = stored(graph, device)  # read once: a second read could race another process's store
    missing = unmeasured(graph, device, backends, remeasure, known=known)
    if not missing and known is not None:
        return known
    log.info("measuring %s on this machine: %s", graph.architecture, ", ".join(b.name for b in missing))
    return measure(graph, device, missing)

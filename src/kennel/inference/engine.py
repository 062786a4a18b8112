"""The inference engine: every frozen forward pass in kennel runs through one :class:`Engine`.

Feature extraction for the cache, the test evaluation, ``kennel predict``, batch transform, serving and the dog
verdict's ImageNet head all open one with :func:`open_engine`, which picks the backend (measured on this machine
for ``auto``) and keeps the figures that led to the choice.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from kennel.errors import KennelError
from kennel.inference import choice, machine
from kennel.inference.backends import BACKENDS, Backend, Runner
from kennel.inference.graph import FrozenGraph

log = logging.getLogger(__name__)

ALIASES = {"onnx": "onnxruntime"}  # the name earlier versions of kennel gave the ONNX Runtime path


class EngineError(KennelError, ValueError):
    """A backend or precision that cannot run here; the message says why and what can."""


@dataclass
class Engine:
    """Runs one :class:`FrozenGraph` on one backend. ``speeds`` are this machine's measured photos/s of the
    forward pass per backend (empty when the backend was named, not chosen); ``photos_per_s`` is the rate of
    every :meth:`run_dataset` so far, decode included."""

    graph: FrozenGraph
    backend: Backend
    device: torch.device
    speeds: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    measurement: choice.Measurement | None = field(default=None, repr=False)  # the figures it was chosen by
    photos: int = 0  # photos run through run_dataset, and the seconds they took
    seconds: float = 0.0
    _runners: dict[int | None, Runner] = field(default_factory=dict, repr=False)  # by threads, None: the process's

    @property
    def runner(self) -> Runner:
        """The backend's runner, opened at first use: a job whose features are all cached never opens one."""
        return self._runner(None)

    def _runner(self, threads: int | None) -> Runner:
        """The backend's runner opened with ``threads`` (an ONNX Runtime session keeps the threads it opened with)."""
        if threads not in self._runners:
            log.info("inference engine for %s: %s (%s)", self.graph.architecture, self.label, self.reason)
            with machine.threads(threads):
                self._runners[threads] = self.backend.open(self.graph, self.device)
        return self._runners[threads]

    @property
    def lanes(self) -> int:
        """How many batches :meth:`run_dataset` runs side by side, each on one thread: on a CPU, as many as the
        threads this process computes with. Threads that share every operation of one batch all wait for the
        slowest at each one, so while another process takes a core they wait a time slice hundreds of times a
        batch; a lane whose core is taken holds up only its own batch. On a quiet 2-core EPYC, dogs10's features
        came 41.2 photos/s in two lanes against 34.9 in one batch at a time on two threads."""
        return max(1, torch.get_num_threads()) if self.device.type == "cpu" else 1

    @property
    def label(self) -> str:
        return self.backend.label

    @property
    def precision(self) -> str:
        return self.backend.precision

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's outputs for a preprocessed batch, float32 on the CPU."""
        return self.runner(batch)

    def run_dataset(
        self, dataset: Dataset, batch_size: int = 32, description: str = "photos", threads: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Every output over ``dataset`` (its items are ``(image tensor, label)``), decoded in parallel with the
        forward pass, with a progress bar on a terminal; each output is ``[len(dataset), ...]``."""
        from rich.console import Console
        from rich.progress import Progress

        from kennel.inference.pipeline import batches

        chunks: list[tuple[torch.Tensor, ...]] = []
        console = Console(stderr=True)  # stdout stays for metric lines; no bar when stderr is not a terminal
        started = time.perf_counter()
        lanes = self.lanes
        run = self._runner(1) if lanes > 1 else self.runner
        with (
            Progress(console=console, transient=True, disable=not console.is_terminal) as progress,
            machine.threads(1 if lanes > 1 else None),
            ThreadPoolExecutor(lanes, thread_name_prefix="kennel-lane") as pool,
        ):
            task = progress.add_task(f"{description} ({self.label})", total=len(dataset))
            running: deque[tuple[Future, int]] = deque()  # in the dataset's order

            def finish_one() -> None:
                future, count = running.popleft()
                chunks.append(future.result())
                progress.advance(task, count)

            for images, _ in batches(dataset, batch_size, threads):
                running.append((pool.submit(run, images), len(images)))
                if len(running) >= lanes:
                    finish_one()
            while running:
                finish_one()
        self.photos += len(dataset)
        self.seconds += time.perf_counter() - started
        if not chunks:
            return tuple(torch.empty(0) for _ in self.graph.outputs)
        return tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))

    @property
    def photos_per_s(self) -> float | None:
        return self.photos / self.seconds if self.photos and self.seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        """What a job records about the engine that ran its forward passes."""
        summary: dict[str, Any] = {
            "backend": self.backend.name,
            "label": self.label,
            "runtime": self.backend.runtime,
            "precision": self.precision,
            "forward_photos_per_s": self.speeds.get(self.backend.name),
            "reason": self.reason,
            "cpu": machine.describe_cpu(),
        }
        if self.photos_per_s is not None:
            summary["photos_per_s"] = round(self.photos_per_s, 1)
        if self.speeds:
            summary["measured"] = dict(self.speeds)
        return summary

    def describe(self) -> str:
        """``onnxruntime int8, 108 photos/s``: the line a person reads in the console."""
        rate = self.photos_per_s or self.speeds.get(self.backend.name)
        return f"{self.label}" + (f", {rate:.0f} photos/s" if rate else "")


def open_engine(
    graph: FrozenGraph,
    device: torch.device,
    backend: str = "auto",
    precision: str = "auto",
    exclude=(),
    figures: choice.Measurement | None = None,
) -> Engine:
    """An engine for ``graph`` on ``device``; its backend opens at first use.

    ``backend`` names one (see :data:`BACKENDS`), or a runtime (``torch``: the fastest of its backends), or
    ``auto``: the fastest of those that can run here at ``precision`` (``auto`` for any), measured now if this
    machine has no figures for this architecture yet. ``exclude`` leaves backends out of the choice (int8 where
    it would lose accuracy). ``figures``: those another engine over the same graph was chosen by
    (:attr:`Engine.measurement`), for a second choice that times nothing again when they cover its backends."""
    backend = ALIASES.get(backend, backend)
    if precision not in choice.PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose one of {', '.join(choice.PRECISIONS)}")
    if backend in BACKENDS:
        return _named(graph, device, backend, precision)
    families = {BACKENDS.get(name).runtime for name in BACKENDS}
    if backend != "auto" and backend not in families:
        known = ", ".join(["auto", *sorted(families | set(BACKENDS))])
        raise EngineError(f"unknown inference backend {backend!r}; choose one of {known}")
    usable, skipped = choice.candidates(graph, device, precision)
    # A runtime's name ("torch", "onnxruntime") means the fastest of its backends.
    for b in usable:
        if b.name in exclude:
            skipped[b.name] = "left out of this choice"
        elif backend not in ("auto", b.runtime):
            skipped[b.name] = f"not a {backend} backend"
    usable = [b for b in usable if b.name not in skipped]
    asked = " and ".join(
        f"{what} {value}" for what, value in (("runtime", backend), ("precision", precision)) if value != "auto"
    )
    if not usable:
        # The backends of the precision asked for, and why each cannot: the others' "runs at fp32" says little.
        telling = {n: why for n, why in skipped.items() if not why.startswith("runs at ")} or skipped
        reasons = "; ".join(f"{name}: {why}" for name, why in telling.items())
        raise EngineError(
            f"no inference backend runs {graph.architecture} here{' at ' + asked if asked else ''} ({reasons})"
        )
    if len(usable) == 1:
        only = f"the only backend for {asked} here" if asked else "the only backend that can run here"
        return Engine(graph, usable[0], device, {}, only)
    covered = figures is not None and all(b.name in {*figures.speeds, *figures.failures} for b in usable)
    measurement = figures if covered else choice.figures(graph, device, usable)
    best = measurement.fastest([b.name for b in usable])
    if best is None:
        failures = "; ".join(f"{n}: {why}" for n, why in measurement.failures.items())
        raise EngineError(f"every inference backend failed on {graph.architecture}: {failures}")
    speeds = {b.name: measurement.speeds[b.name] for b in usable if b.name in measurement.speeds}
    runner_up = sorted(speeds.values(), reverse=True)[1:2]
    reason = f"fastest measured here: {speeds[best]:.0f} photos/s" + (f", next {runner_up[0]:.0f}" if runner_up else "")
    if set(speeds) & set(measurement.provisional):
        reason += " (provisional: timed on a busy machine)"
    return Engine(graph, BACKENDS.get(best), device, speeds, reason, measurement)


def _named(graph: FrozenGraph, device: torch.device, name: str, precision: str) -> Engine:
    backend = BACKENDS.get(name)
    if precision not in ("auto", backend.precision):
        raise EngineError(f"backend {name} runs at {backend.precision}, not {precision}")
    why_not = backend.unavailable(graph, device)
    if why_not is not None:
        raise EngineError(f"inference backend {name} cannot run here: {why_not}")
    known = choice.stored(graph, device)  # this machine's figures, where it has them
    speeds = {name: known.speeds[name]} if known and name in known.speeds else {}
    return Engine(graph, backend, device, speeds, "asked for")

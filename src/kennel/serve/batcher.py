"""Dynamic batching: concurrent requests wait up to ``max_wait_ms`` to share one model call.

One worker task takes requests from an asyncio queue until it has ``max_batch_size`` of them or the wait is over,
stacks them and runs the model in a thread, so the event loop keeps accepting requests meanwhile; requests that
arrive while the model runs form the next batch.

Batches come in a few sizes only: powers of two, and ``max_batch_size``. Of 20 waiting requests, 16 run now and 4
open the next batch. ONNX Runtime plans and keeps memory per input shape; with every size from 1 to 32 a server's
memory kept growing, with a handful it levels off (benchmarks/serve_soak.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch

from kennel import serve_defaults as defaults
from kennel.predictor import Outputs


class _Item(NamedTuple):
    tensor: torch.Tensor
    future: asyncio.Future[Outputs]
    queued: float  # time.monotonic() at submit: a batch waits for others until its first request has waited enough


class BatcherStopped(RuntimeError):
    """``submit`` after ``stop``."""


class DynamicBatcher:
    """Groups ``submit`` calls into batches for ``run_batch`` and hands each caller its own row of the outputs."""

    def __init__(
        self,
        run_batch: Callable[[torch.Tensor], Outputs],
        max_batch_size: int = defaults.MAX_BATCH_SIZE,
        max_wait_ms: float = defaults.MAX_WAIT_MS,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("need max_batch_size >= 1 and max_wait_ms >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch  # called with (batch size, seconds in the model) after every batch
        self.batch_sizes: deque[int] = deque(maxlen=10_000)  # the latest batch sizes, for tests and logs
        self.allowed_sizes = sorted({1 << i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self._carry: deque[_Item] = deque()  # gathered but left for the next batch, which they open
        self._queue: asyncio.Queue[_Item | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._carry)

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._stopping = False
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="kennel-batcher")

    async def stop(self) -> None:
        """Refuse new requests, finish every one already queued, then end the worker."""
        if self._worker is None or self._queue is None:
            return
        self._stopping = True
        await self._queue.put(None)
        await self._worker
        self._worker = None

    async def submit(self, tensor: torch.Tensor) -> Outputs:
        """The outputs for one preprocessed image ``[3, H, W]``: ``logits [C]`` and ``imagenet_logits [1000]``."""
        if self._queue is None or self._stopping:
            raise BatcherStopped("the model is not serving (starting or shutting down)")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(tensor, future, time.monotonic()))
        return await future

    def _cut(self, items: list[_Item]) -> list[_Item]:
        """The largest allowed size of ``items`` runs now; the rest open the next batch, in their order."""
        size = max(s for s in self.allowed_sizes if s <= len(items))
        self._carry.extendleft(reversed(items[size:]))
        return items[:size]

    async def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        assert self._queue is not None
        # From the first request's arrival: requests carried over from a cut batch have waited already.
        items, deadline = [first], first.queued + self.max_wait
        while len(items) < self.max_batch_size:
            try:
                item = self._carry.popleft() if self._carry else self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if item is None:  # stop: finish this batch and whatever is still queued
                return self._cut(items), True
            items.append(item)
        return self._cut(items), False

    async def _work(self) -> None:
        assert self._queue is not None
        stop = False
        while True:
            if stop and self._queue.empty() and not self._carry:
                return
            first = self._carry.popleft() if self._carry else await self._queue.get()
            if first is None:
                stop = True
                continue
            items, stopped = await self._collect(first)
            stop = stop or stopped
            await self._run(items)

    async def _run(self, items: list[_Item]) -> None:
        items = [item for item in items if not item.future.done()]  # a caller that gave up
        if not items:
            return
        started = time.perf_counter()
        try:
            outputs = await asyncio.to_thread(self.run_batch, torch.stack([item.tensor for item in items]))
        except Exception as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.batch_sizes.append(len(items))
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - started)
        imagenet = outputs.imagenet_logits
        for row, item in enumerate(items):
            if not item.future.done():
                item.future.set_result(Outputs(outputs.logits[row], imagenet[row] if imagenet is not None else None))

    async def __aenter__(self) -> DynamicBatcher:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.stop()

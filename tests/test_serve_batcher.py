"""The dynamic batcher: concurrent submissions share model calls, each caller gets its own row, stop drains."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import torch

from kennel.predictor import Outputs
from kennel.serve.batcher import BatcherStopped, DynamicBatcher


class FakeModel:
    """Logits that echo each input's first pixel, so a mixed-up row is visible; records the thread it ran on.

    A held model (``held=True``) does not finish a call until the test calls ``release()``: the test looks at the
    batcher while the model is known to be running, instead of sleeping and hoping it still is."""

    def __init__(self, held: bool = False) -> None:
        self.threads: list[int] = []
        self.entered = threading.Event()
        self._released = threading.Event()
        if not held:
            self._released.set()

    def release(self) -> None:
        self._released.set()

    def __call__(self, batch: torch.Tensor) -> Outputs:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if not self._released.wait(30):
            raise TimeoutError("the test never released the model")
        first = batch[:, 0, 0, 0]
        return Outputs(torch.stack([first, -first], dim=1), first[:, None].repeat(1, 1000))


def image(value: float) -> torch.Tensor:
    return torch.full((3, 4, 4), value)


async def until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Yield to the event loop until ``condition()`` holds; fail if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        await asyncio.sleep(0.001)


def test_concurrent_submissions_are_batched_and_keep_their_rows() -> None:
    run = FakeModel()
    sizes: list[int] = []

    async def main() -> list[Outputs]:
        async with DynamicBatcher(run, max_batch_size=8, max_wait_ms=20, on_batch=lambda n, s: sizes.append(n)) as b:
            return await asyncio.gather(*(b.submit(image(float(i))) for i in range(20)))

    results = asyncio.run(main())
    for i, out in enumerate(results):
        assert out.logits.tolist() == [float(i), -float(i)]
        assert out.imagenet_logits is not None and out.imagenet_logits.shape == (1000,)
        assert float(out.imagenet_logits[0]) == float(i)
    assert sum(sizes) == 20 and max(sizes) > 1 and max(sizes) <= 8
    assert threading.get_ident() not in run.threads  # the model ran off the event loop's thread


def test_batches_come_in_powers_of_two_and_the_maximum_in_arrival_order() -> None:
    run = FakeModel()
    sizes: list[int] = []
    order: list[float] = []

    def recording_run(batch: torch.Tensor) -> Outputs:
        order.extend(batch[:, 0, 0, 0].tolist())
        return run(batch)

    async def main() -> list[Outputs]:
        async with DynamicBatcher(recording_run, 12, max_wait_ms=30, on_batch=lambda n, s: sizes.append(n)) as b:
            return await asyncio.gather(*(b.submit(image(float(i))) for i in range(23)))

    results = asyncio.run(main())
    assert [out.logits.tolist()[0] for out in results] == [float(i) for i in range(23)]
    assert order == [float(i) for i in range(23)]  # requests left for the next batch go first there
    assert sum(sizes) == 23 and set(sizes) <= {1, 2, 4, 8, 12} and 12 in sizes


def test_event_loop_stays_free_while_the_model_runs() -> None:
    run = FakeModel(held=True)

    async def main() -> Outputs:
        async with DynamicBatcher(run, max_wait_ms=0) as batcher:
            answer = asyncio.create_task(batcher.submit(image(1)))
            # Only the event loop can let the model finish: a model run on the loop's thread would block it, and
            # the model would give up waiting.
            await until(run.entered.is_set, "the model call")
            run.release()
            return await answer

    assert asyncio.run(main()).logits.tolist() == [1.0, -1.0]


def test_stop_drains_queued_requests_and_refuses_new_ones() -> None:
    run = FakeModel(held=True)

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=2, max_wait_ms=1)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit(image(float(i)))) for i in range(7)]
        await until(run.entered.is_set, "the first batch")
        assert batcher.depth == 5  # two in the model, the rest queued when the stop comes
        run.release()
        await batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.submit(image(0))
        return [t.result() for t in pending], list(batcher.batch_sizes)

    results, sizes = asyncio.run(main())
    assert [float(r.logits[0]) for r in results] == [float(i) for i in range(7)]
    assert sum(sizes) == 7 and max(sizes) == 2


def test_a_failing_batch_fails_its_callers_only() -> None:
    calls = 0

    def run(batch: torch.Tensor) -> Outputs:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return Outputs(batch[:, 0, 0, :1], None)

    async def main():
        async with DynamicBatcher(run, max_wait_ms=0) as batcher:
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit(image(1))
            return await batcher.submit(image(2))

    out = asyncio.run(main())
    assert out.logits.tolist() == [2.0] and out.imagenet_logits is None


def test_depth_counts_waiting_requests() -> None:
    run = FakeModel(held=True)

    async def main() -> tuple[int, int]:
        async with DynamicBatcher(run, max_batch_size=1, max_wait_ms=0) as batcher:
            tasks = [asyncio.create_task(batcher.submit(image(1))) for _ in range(4)]
            await until(run.entered.is_set, "the first batch")
            waiting = batcher.depth  # one in the model, three waiting
            run.release()
            await asyncio.gather(*tasks)
            return waiting, batcher.depth

    assert asyncio.run(main()) == (3, 0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda b: Outputs(b, None), max_batch_size=0)


def test_requests_left_over_from_a_cut_batch_do_not_wait_a_second_time() -> None:
    from kennel.serve.batcher import _Item

    async def main() -> list[int]:
        batcher = DynamicBatcher(FakeModel(), 16, max_wait_ms=60_000)  # a minute: a second wait would show
        batcher._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        waited = time.monotonic() - 120  # these requests came two minutes ago
        items = [_Item(image(float(i)), loop.create_future(), waited) for i in range(14)]
        batcher._carry.extend(items[1:])
        batch, _ = await asyncio.wait_for(batcher._collect(items[0]), 10)
        return [len(batch), len(batcher._carry)]

    assert asyncio.run(main()) == [8, 6]  # cut to a power of two at once; the six open the next batch

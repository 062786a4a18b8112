"""Photos decoded and preprocessed in parallel with the forward pass, in order.

PIL's decoder and resampler and PyTorch's tensor ops release the GIL, so a few threads keep batches ready while
the engine (which also releases it) runs the previous one: the forward pass never waits for a decode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch.utils.data import Dataset

from kennel.inference.machine import cores


def decode_threads() -> int:
    """One decoding thread per core: they sleep while a batch is ready, so they cost the forward pass little."""
    return max(1, min(8, cores()))


def batches(
    dataset: Dataset, batch_size: int, threads: int | None = None, ahead: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images [N, 3, S, S], labels [N])`` over ``dataset`` in order, up to ``ahead`` batches decoded early.

    An item that fails to decode raises its error (an :class:`~kennel.data.images.ImageError` naming the file)
    when its batch is reached."""
    threads = threads or decode_threads()
    size = len(dataset)
    with ThreadPoolExecutor(threads, thread_name_prefix="kennel-decode") as pool:
        pending: deque[Future] = deque()
        submitted = 0

        def fill() -> None:
            nonlocal submitted
            while submitted < size and len(pending) < batch_size * (ahead + 1):
                pending.append(pool.submit(dataset.__getitem__, submitted))
                submitted += 1

        try:
            fill()
            while pending:
                items = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
                fill()
                images, labels = zip(*items, strict=True)
                yield torch.stack(images), torch.as_tensor(labels)
        finally:
            for future in pending:
                future.cancel()

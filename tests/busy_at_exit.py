"""Imported by the ranks of a test's two-process job (``debug.imports: [busy_at_exit]``): a thread that runs
native code (a matrix product, which releases the GIL) until the process ends, as gloo's threads and a
library's workers do. When a rank's interpreter finalizes while such a thread is inside native code, CPython
ends the thread with ``pthread_exit`` as it takes the GIL back, and unwinding it through C++ frames that may not
throw calls ``std::terminate``: the rank aborts ("terminate called without an active exception"). The thread
starts only in torchrun's ranks, never in the launcher."""

from __future__ import annotations

import os
import threading

import torch


def _busy() -> None:
    matrix = torch.randn(512, 512)
    while True:
        matrix @ matrix


if "RANK" in os.environ:
    threading.Thread(target=_busy, name="busy-at-exit", daemon=True).start()

"""The endpoint's defaults, declared once: ``kennel serve``'s flags, its settings and the SageMaker handlers read
them here. A module of its own, outside :mod:`kennel.serve`, so the command line can show them without importing
the web stack or PyTorch."""

from __future__ import annotations

from kennel.processes import available_cores

HOST = "127.0.0.1"  # loopback unless told otherwise
PORT = 8080  # SageMaker's
MAX_BODY_BYTES = 6_000_000  # SageMaker's invocation payload limit
MAX_PIXELS = 26_000_000  # a 6240x4160 camera photo; the model reads a few hundred pixels a side
MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 5.0
TOP_K = 5
DOG_THRESHOLD = 0.5
FACES = "not-dog"
RUNTIME = "auto"
PRECISION = "auto"

# Production limits (docs/guides/endpoint.md).
MAX_QUEUE = 256  # requests waiting for the model; 503 with Retry-After beyond
REQUEST_TIMEOUT_S = 60.0  # SageMaker's invocation timeout; 503 with Retry-After past it
HEADER_TIMEOUT_S = 10.0  # a connection that has not sent its request headers by then is closed
LINGER_BYTES = 64_000_000  # an oversize body is read and dropped up to this much, so the client reads the 413
ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")  # Host headers a loopback server answers
# Images decoded at once, one per core: more only adds full-size buffers in memory (kennel.serve.inputs.DecodeSlots).
MAX_DECODES = available_cores()

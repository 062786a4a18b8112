"""What the HTTP layer serves: one small interface, with a kind of model behind it for each way of deploying one.

The routes, the guards (token, Host check, body and pixel limits, the runtime API's signature), capture,
``/metrics``, health and reload are written once, against :class:`ServedModel`. Two kinds implement it:

- :class:`kennel.serve.artifact_model.ArtifactModel`: kennel's own artifact, with its dynamic batcher, its
  preprocessing and the dog and face verdicts;
- :class:`kennel.serve.handler_model.HandlerModel`: the user's ``inference.py`` (``model_fn``, ``input_fn``,
  ``predict_fn``, ``output_fn`` or ``transform_fn``), as SageMaker's PyTorch inference toolkit runs it.

A :class:`ModelLoader` makes one (in a thread: loading is slow) each time the endpoint loads its model: at start,
on ``/reload`` or SIGHUP, and when a registry alias moves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from kennel.serve.inputs import InputError

if TYPE_CHECKING:
    from PIL import Image

    from kennel.serve.settings import ServeSettings
    from kennel.serve.slot import Source

JSON_TYPE = "application/json"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class Invocation(NamedTuple):
    """One prediction request as every route hands it to the model."""

    body: bytes
    content_type: str | None
    accept: str | None = None
    params: Mapping[str, str] = {}  # the query's parameters: kennel's artifacts read top_k
    custom_attributes: str | None = None  # SageMaker's X-Amzn-SageMaker-Custom-Attributes, for the handlers


class Captured(NamedTuple):
    """What ``--capture`` writes of one answer (:meth:`kennel.serve.capture.Capture.record`): the answer in
    kennel's shape (predictions, dog) as far as there is one, the decoded photo when the model decoded one (else
    the capture decodes a thumbnail of the body itself, off the request path), and the time the model took."""

    answer: Mapping[str, Any]
    image: Image.Image | None
    latency_ms: float


class Reply(NamedTuple):
    """The model's answer: the body and its content type; ``capture`` makes what ``--capture`` writes of it,
    called only when capturing; ``custom_attributes`` goes back in SageMaker's header."""

    body: bytes
    content_type: str
    capture: Callable[[], Captured] | None = None
    custom_attributes: str | None = None


class ServedModel(ABC):
    """A model the endpoint serves, from loaded to stopped. Every method but :meth:`invoke`, :meth:`start` and
    :meth:`stop` is cheap and may run on the event loop."""

    @staticmethod  # noqa: B027  (a no-op until the endpoint points it at its metrics)
    def observe(size: int, seconds: float) -> None:
        """Told the size and seconds of every model call; the endpoint points it at ``/metrics``."""

    async def start(self) -> None:  # noqa: B027  (most kinds have nothing to start)
        """Make the model ready to answer (workers started, warmed up), beside the one serving; raise if it
        cannot be, after undoing what was started."""

    async def stop(self) -> None:  # noqa: B027
        """Answer what is in hand, then let go of what :meth:`start` started."""

    @abstractmethod
    async def invoke(self, invocation: Invocation) -> Reply:
        """The answer to one request; a request the model refuses is an :class:`InputError` (a 4xx, or a 5xx for a
        handler that failed)."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What ``GET /model`` says of the model, beside its name, version and alias."""

    @abstractmethod
    def signature(self) -> dict[str, Any]:
        """The Open Inference Protocol's ``platform``, ``inputs`` and ``outputs`` of the model."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What tells this model's captured requests apart from another's, beside its name and version."""

    @abstractmethod
    def describe(self) -> str:
        """The model in a few words, for the log line that says it serves."""

    @property
    def depth(self) -> int:
        """Requests waiting for the model (``kennel_queue_depth``)."""
        return 0

    def explain(self, body: bytes, content_type: str | None) -> bytes:
        """A PNG of where the model looked in the photo (CPU work: run it off the event loop)."""
        raise InputError(404, "not_supported", f"this endpoint's model cannot explain a prediction ({self.describe()})")


class ModelLoader(Protocol):
    """Loads the model an endpoint serves, each time it is asked to."""

    @property
    def ref(self) -> str:
        """What is loaded, for the log: a folder, a registry URI, an entry point."""

    @property
    def name(self) -> str:
        """The model's name when none is given (``--name``): known before it loads, since the runtime API's key
        is made from it."""

    def load(self, settings: ServeSettings, name: str) -> tuple[ServedModel, Source]:
        """The model, named ``name``, and where it came from; slow (run it in a thread)."""


def accepted(accept: str | None) -> list[str]:
    """The media types of an ``Accept`` header, in its order, without their parameters (``q=``)."""
    return [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",") if part.strip()]


def accepts_json(accept: str | None) -> bool:
    """Whether a client sending ``accept`` reads JSON: no header, or one naming JSON or a range that holds it."""
    kinds = accepted(accept)
    return not kinds or any(kind in (JSON_TYPE, "application/*", "*/*") for kind in kinds)

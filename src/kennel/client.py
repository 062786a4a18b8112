"""A client for a running kennel endpoint (``kennel serve``): ping, model info, predictions.

    client = EndpointClient("http://127.0.0.1:8080")
    answer = client.predict("rex.jpg", top_k=3)
    answer["predictions"][0]["label"], answer["dog"]["is_dog"]

Photos travel as their raw bytes to ``POST /invocations`` with a content type sniffed from the bytes, as
SageMaker's endpoints take them. The server's own error (``{"error": {"code", "message"}}``) comes back as an
:class:`EndpointError`; an endpoint that cannot be reached raises :class:`EndpointUnreachable`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from kennel.errors import KennelError

PhotoInput = Path | str | bytes

# Leading bytes of the formats the server decodes, and the content type sent for each.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)


class EndpointError(KennelError, RuntimeError):
    """The endpoint answered with an error; ``code`` and ``message`` are the server's own."""

    exit_code = 1

    def __init__(self, message: str, code: str = "error", status: int | None = None, url: str = "") -> None:
        super().__init__(f"{message} (HTTP {status}, {code})" if status else message)
        self.code = code
        self.message = message
        self.status = status
        self.url = url


class EndpointUnreachable(EndpointError):
    """No answer: nothing listens at the address, or it timed out."""


def content_type(data: bytes) -> str:
    """``image/jpeg`` or ``image/png`` from the leading bytes; ``application/x-image`` for anything else."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    return "application/x-image"


def read_photo(photo: PhotoInput) -> bytes:
    """The bytes of a photo given as bytes or a path; a clear error for a missing file."""
    if isinstance(photo, bytes | bytearray | memoryview):
        return bytes(photo)
    path = Path(photo).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path.read_bytes()


class EndpointClient:
    """Talks to one endpoint at ``url`` (``http://host:port``); safe to share between threads."""

    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = f"http://{url}"
        self.url = url
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}  # kennel serve's bearer token
        self._local = threading.local()  # one requests.Session (connection pool) per thread

    def __repr__(self) -> str:
        return f"EndpointClient({self.url!r}, timeout={self.timeout})"

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._headers)
        return session

    def _request(self, method: str, route: str, **kwargs: Any) -> requests.Response:
        url = f"{self.url}{route}"
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise EndpointUnreachable(f"endpoint {self.url} did not answer {route} within {self.timeout:g} s") from exc
        except requests.ConnectionError as exc:
            raise EndpointUnreachable(
                f"cannot reach the endpoint at {self.url} (is `kennel serve` running there?)"
            ) from exc
        if response.status_code >= 400:
            raise _error_from(response, url)
        return response

    def _json(self, method: str, route: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, route, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointError(f"{route} answered with something that is not JSON", "bad_response") from exc

    def ping(self) -> bool:
        """True when the endpoint answers ``GET /ping`` with 200; raises when it cannot be reached."""
        return self._request("GET", "/ping").status_code == 200

    def model_info(self) -> dict[str, Any]:
        """``GET /model``: classes, backbone, metrics and preprocessing of the served model."""
        return self._json("GET", "/model")

    def predict(self, photo: PhotoInput, top_k: int = 5) -> dict[str, Any]:
        """The endpoint's answer for one photo (a path or its bytes): predictions, dog, human_face, model."""
        data = read_photo(photo)
        return self._json(
            "POST",
            "/invocations",
            params={"top_k": top_k},
            data=data,
            headers={"Content-Type": content_type(data), "Accept": "application/json"},
        )

    def predict_many(
        self, photos: Iterable[PhotoInput], top_k: int = 5, concurrency: int = 4
    ) -> Iterator[dict[str, Any] | Exception]:
        """Answers for many photos, in order, ``concurrency`` requests in flight.

        A photo that fails yields its exception (:class:`EndpointError`, ``FileNotFoundError``) in its place,
        so one bad file does not stop a batch; an unreachable endpoint raises at once.
        """

        def one(photo: PhotoInput) -> dict[str, Any] | Exception:
            try:
                return self.predict(photo, top_k)
            except EndpointUnreachable:
                raise
            except (EndpointError, OSError) as exc:
                return exc

        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="kennel-client") as pool:
            yield from pool.map(one, photos)


def _error_from(response: requests.Response, url: str) -> EndpointError:
    """The server's ``{"error": {"code", "message"}}`` as an exception; a plain one when the body is not that."""
    code, message = "http_error", response.text.strip()[:300] or response.reason or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
        elif "detail" in body:  # FastAPI's default for validation errors
            message = str(body["detail"])
    return EndpointError(message, code, response.status_code, url)

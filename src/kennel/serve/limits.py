"""Body limits that every HTTP client can read: a 413 for an oversize body, and a lingering read so it arrives.

A server that answers before it has read the request's body and then closes the connection leaves unread bytes
in its socket; the kernel answers them with a reset, and a client still sending (Python's urllib, which asks for
``Connection: close``) gets "connection reset" or "broken pipe" instead of the answer. :class:`Linger` reads and
drops the rest of such a body, up to a bound, before the answer's last bytes go out, so the client finishes
sending and reads the status. A client that sent ``Expect: 100-continue`` has sent nothing yet and is answered at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kennel import serve_defaults as defaults

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
LINGER_S = 10.0


class Unavailable(Exception):
    """A request the endpoint cannot take now: a 503 with ``Retry-After``."""

    def __init__(self, code: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The endpoint's one error shape, ``{"error": {"code", "message"}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


class BodyLimit:
    """413 for a request whose Content-Length, or whose bytes as they arrive, pass ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        too_large = error(413, "body_too_large", f"the body is over the limit of {self.max_bytes:,} bytes")
        length = content_length(scope)
        if length is not None and length > self.max_bytes:
            return await too_large(scope, receive, send)
        seen, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the 413 is already out: drop whatever the app answers to the cut-off body
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


class Linger:
    """Before the last message of an answer, read and drop what is left of the request's body (``max_bytes`` at
    most), so that a client still sending it reads the answer instead of a reset connection."""

    def __init__(self, app: ASGIApp, max_bytes: int = defaults.LINGER_BYTES, seconds: float = LINGER_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds  # a client that trickles its body is not waited for longer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        length = content_length(scope)
        waits_for_continue = (header(scope, b"expect") or b"").lower() == b"100-continue"
        state: dict[str, Any] = {"done": length == 0, "read": 0}

        async def tracking_receive() -> Message:
            message = await receive()
            state["read"] += 1
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["done"] = True
            return message

        async def drain() -> None:
            dropped = 0
            while not state["done"] and dropped <= self.max_bytes:
                message = await receive()
                dropped += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    state["done"] = True

        async def lingering_send(message: Message) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if last and not state["done"]:
                unsent = waits_for_continue and state["read"] == 0  # the client waits for a 100 it will not get
                hopeless = length is not None and length > self.max_bytes
                if not unsent and not hopeless:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(drain(), self.seconds)
            await send(message)

        await self.app(scope, tracking_receive, lingering_send)

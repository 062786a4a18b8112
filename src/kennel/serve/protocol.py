"""uvicorn's HTTP/1.1 protocol with a time limit on a request's headers.

uvicorn times out a connection that idles between requests (keep-alive), but not one that sends its request
headers a byte at a time: fifty such clients hold fifty connections for as long as they like. Here a connection
whose next request's headers are not all in ``timeout_s`` after it opened, or after its last answer, gets a 408
and is closed. What happens once the headers are in (a slow body, a slow model) is the app's request timeout.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from kennel import serve_defaults as defaults

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderTimeoutProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request headers are not in within ``timeout_s``."""

    timeout_s: float = defaults.HEADER_TIMEOUT_S  # set per process by the server's factory (kennel.cli.serve)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._start_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

"""Who may call the endpoint: a bearer token, the Host header of a loopback server, and CORS only when asked for.

Three pure ASGI middlewares answer refusals in the app's error shape ``{"error": {"code", "message"}}``.
:func:`guard_stack` lists them in the order they must run; :func:`guard` wraps an app in them.

- :class:`HostCheck` (outermost): a server on loopback answers only requests addressed to a loopback name. A web
  page on another site can point its own domain name at 127.0.0.1 (DNS rebinding) and then read the endpoint as
  if it were that site; the Host header it sends still names its domain, and that is what is refused.
- ``CORSMiddleware`` (Starlette's): only with ``--cors ORIGIN``. It sits outside the token check because a
  browser's preflight ``OPTIONS`` never carries the ``Authorization`` header, and so that a 401 still carries
  the headers that let the other origin's page read it.
- :class:`TokenAuth` (innermost): every path but the health checks, the page and the docs needs
  ``Authorization: Bearer TOKEN``. The app's body limit belongs inside it, so that a caller without the token
  is refused before its upload is read. Paths another check guards (the SageMaker runtime route, which boto3
  signs: :class:`kennel.serve.runtime_api.SignedOnly`) are left to that check.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from kennel import serve_defaults as defaults
from kennel.errors import UsageError
from kennel.serve.limits import error, header

# Open so that load balancers and SageMaker can check health, and so that the page and the docs load in a browser
# that has no token yet: the page then asks for it. Nothing here reveals a prediction or the model's details.
OPEN_PATHS = frozenset(
    {"/ping", "/v2/health/live", "/v2/health/ready", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# The page's files and the docs' scripts; StaticFiles itself refuses paths that climb out of its folder.
OPEN_PREFIXES = ("/static/", "/static-offline-docs/")


def refusal(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ASGIApp:
    """An ASGI app that answers a refusal in the error shape (a WebSocket is closed before it is accepted)."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the server answers the handshake with a 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await error(status, code, message, headers)(scope, receive, send)

    return answer


class TokenAuth:
    """401 with ``WWW-Authenticate: Bearer`` for a request to a closed path without the right token.

    Closed by default: a path is open only when it is in ``open_paths`` or starts with one of ``open_prefixes``,
    so a route added later needs the token until someone decides otherwise. ``token`` None turns the check off.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | Secret | None,
        open_paths: Iterable[str] = OPEN_PATHS,
        open_prefixes: Iterable[str] = OPEN_PREFIXES,
    ) -> None:
        self.app = app
        self.token = str(token).encode() if token is not None else None
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket") or self.is_open(scope["path"]):
            return await self.app(scope, receive, send)
        presented = bearer(header(scope, b"authorization"))
        if presented is None:
            message, challenge = "this endpoint needs its token: send the header Authorization: Bearer TOKEN", ""
        # Constant time, so the answer's timing does not tell how much of a guess was right.
        elif not hmac.compare_digest(presented, self.token):
            message, challenge = "the token sent is not this endpoint's", ', error="invalid_token"'
        else:
            return await self.app(scope, receive, send)
        refused = refusal(401, "unauthorized", message, {"WWW-Authenticate": f'Bearer realm="kennel"{challenge}'})
        return await refused(scope, receive, send)


def bearer(value: bytes | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer ...`` value (the scheme's name in any case), or None."""
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


def host_name(value: str) -> str:
    """The name in a Host header, lower case, without its port, brackets or a final dot: ``[::1]:8080`` is
    ``::1``, ``LocalHost.:80`` is ``localhost``. A bare IPv6 address (no brackets) is kept whole; a value that is
    no ``name[:port]`` at all (``[::1]x``, ``localhost:80x``) is kept whole too, so that it matches no name."""
    value = value.strip().lower()
    if value.startswith("[") and "]" in value:
        name, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            return value
        port = rest[1:]
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    if port and not port.isdigit():
        return value
    return name.rstrip(".")


class HostCheck:
    """421 Misdirected Request for a request whose Host header is none of ``allowed_hosts``.

    421 says this server does not answer for that name, which is the case, and tells it apart from the token's 401.
    A request without a Host header is let through: only HTTP/1.0 may omit it, browsers always send it, and a page
    that rebinds DNS to reach this server cannot remove it; what omits it is a local script or health check.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(dict.fromkeys(host_name(host) for host in allowed_hosts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        value = header(scope, b"host")
        if value is None or host_name(value.decode("latin-1")) in self.allowed:
            return await self.app(scope, receive, send)
        shown = value.decode("latin-1")[:100]
        message = (
            f"this endpoint listens on loopback and answers requests for {', '.join(self.allowed)}, not Host "
            f"{shown!r}; start it with --allowed-host {host_name(shown) or 'NAME'} to accept that name"
        )
        return await refusal(421, "bad_host", message)(scope, receive, send)


def check_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """The ``--cors`` origins as a browser sends them in its Origin header (``scheme://host[:port]``, or ``*``);
    a path or a final slash would never match one, so it is an error rather than a silent no-op."""
    checked = []
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.netloc or origin != f"{parts.scheme}://{parts.netloc}"
        ):
            raise UsageError(f"--cors {origin}: give an origin such as https://example.com (no path), or *")
        checked.append(origin)
    return tuple(checked)


def guard_stack(
    *,
    token: str | None,
    loopback: bool,
    allowed_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    signed_prefixes: Iterable[str] = (),
) -> list[Middleware]:
    """The guarding middlewares, outermost first.

    ``token``: the bearer token to require, None for none (a loopback server without one, or ``--no-auth``; see
    :func:`kennel.serve.tokens.resolve_token`). ``loopback``: whether the server listens on loopback only, which
    turns the Host check on. ``allowed_hosts``: the ``--allowed-host`` names, beside
    :data:`kennel.serve_defaults.ALLOWED_HOSTS`. ``cors_origins``: the ``--cors`` origins; none, no CORS headers.
    ``signed_prefixes``: paths the token leaves to a signature check the app installs inside the stack.
    """
    stack = []
    if loopback:
        stack.append(Middleware(HostCheck, allowed_hosts=(*defaults.ALLOWED_HOSTS, *allowed_hosts)))
    origins = check_origins(cors_origins)
    if origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=("GET", "POST"),
                allow_headers=("Authorization", "Content-Type"),
            )
        )
    # As a Secret, so that printing the stack (Starlette's Middleware shows its arguments) does not show the token.
    signed = (*OPEN_PREFIXES, *signed_prefixes)
    stack.append(Middleware(TokenAuth, token=Secret(token) if token is not None else None, open_prefixes=signed))
    return stack


def guard(
    app: ASGIApp,
    *,
    token: str | None,
    loopback: bool,
    allowed_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
) -> ASGIApp:
    """``app`` inside :func:`guard_stack`'s middlewares."""
    stack = guard_stack(token=token, loopback=loopback, allowed_hosts=allowed_hosts, cors_origins=cors_origins)
    for cls, args, kwargs in reversed(stack):
        app = cls(app, *args, **kwargs)
    return app

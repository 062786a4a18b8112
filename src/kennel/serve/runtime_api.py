"""The SageMaker Runtime API on every kennel endpoint: ``POST /endpoints/{name}/invocations`` answered as
InvokeEndpoint answers, so that boto3's ``sagemaker-runtime`` client and the ``sagemaker`` SDK's ``Predictor``
talk to kennel with only the endpoint URL changed.

- Requests carry boto3's SigV4 signature (:mod:`kennel.serve.sigv4`) instead of the bearer token: the access key
  id is made from the endpoint's name, the secret is its token. :class:`SignedOnly` checks it; a wrong or
  missing one is a 403 before the model sees anything.
- A request names the endpoint: another name is a 404.
- Answers: the model's body and ``Content-Type``, ``x-Amzn-Invoked-Production-Variant`` and the custom attributes
  the model set. A request the model refuses or fails on is SageMaker's ``ModelError`` (424, with the model's own
  status and answer in ``OriginalStatusCode`` and ``OriginalMessage``); every other refusal on these paths (413,
  421, 503, ...) is rewritten into AWS's shape by :class:`AwsErrors`: ``{"message": ...}`` with the error type in
  ``x-amzn-ErrorType``, which is what boto3 reads to raise ``ModelError``, ``ValidationError`` and the like.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Secret
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kennel.serve import sigv4
from kennel.serve.batcher import BatcherStopped
from kennel.serve.inputs import InputError
from kennel.serve.limits import Unavailable, header
from kennel.serve.routes import invocation, service_of
from kennel.serve.served import CUSTOM_ATTRIBUTES, Reply
from kennel.serve.service import ClientGone

log = logging.getLogger("kennel.serve.app")

PREFIX = "/endpoints/"  # every path under it is signed, and answers errors in AWS's shape
VARIANT = "AllTraffic"  # the production variant SageMaker names when a deployment names none
ERROR_TYPE = "x-amzn-ErrorType"

router = APIRouter()


def aws_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None, **fields) -> JSONResponse:
    """An error as AWS's JSON services answer one: boto3 raises ``kind`` with ``message``."""
    return JSONResponse(
        {"message": message, **fields}, status_code=status, headers={ERROR_TYPE: kind, **(headers or {})}
    )


def model_error(status: int, answer: str) -> JSONResponse:
    """SageMaker's answer when the model answered ``status`` with ``answer``: a ``ModelError``."""
    side = "client" if status < 500 else "server"
    message = f'Received {side} error ({status}) from primary with message "{answer}". See the endpoint\'s log.'
    code = f"{side.upper()}_ERROR_FROM_MODEL"
    return aws_error(424, "ModelError", message, ErrorCode=code, OriginalStatusCode=status, OriginalMessage=answer)


@router.post(
    PREFIX + "{name}/invocations",
    summary="SageMaker Runtime's InvokeEndpoint (boto3, the sagemaker SDK): signed with the endpoint's key pair",
    response_class=Response,
)
async def invoke_endpoint(request: Request, name: str) -> Response:
    service = service_of(request)
    if name != service.name:
        message = f"Endpoint {name} not found: this kennel endpoint is {service.name}"
        return aws_error(404, "ValidationError", message)

    async def work() -> Reply | Response:
        body = await request.body()
        try:
            return await service.invoke(request, invocation(request, body)._replace(params={}))
        except (Unavailable, BatcherStopped, ClientGone):
            raise
        except InputError as exc:
            return model_error(exc.status, json.dumps(exc.to_dict()))
        except Exception as exc:
            log.exception("unexpected error on %s", request.url.path)
            return model_error(500, json.dumps({"error": {"code": "internal", "message": type(exc).__name__}}))

    reply = await service.admitted(work)
    if isinstance(reply, Response):
        return reply
    headers = {"x-Amzn-Invoked-Production-Variant": VARIANT}
    if reply.custom_attributes:
        headers[CUSTOM_ATTRIBUTES] = reply.custom_attributes
    return Response(reply.body, media_type=reply.content_type, headers=headers)


class SignedOnly:
    """Lets a request under :data:`PREFIX` through only with a valid SigV4 signature by the endpoint's key.

    The header is checked first (present, this service, a date within 15 minutes), so that most refusals come
    before the body is read; then the body is read, within the body limit (this sits inside it), and the whole
    signature checked; the app then reads the body as if it had not been read. ``secret`` None refuses every
    request: a server without a key has no open door here. ``name`` gives the endpoint's name, whose access key
    id signs.
    """

    def __init__(self, app: ASGIApp, secret: Secret | None, name: Callable[[], str]) -> None:
        self.app = app
        self.secret = str(secret) if secret is not None else None
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        decode = lambda name: (header(scope, name) or b"").decode("latin-1") or None  # noqa: E731
        amz_date = decode(b"x-amz-date")
        try:
            if self.secret is None:
                raise sigv4.SignatureError("AccessDeniedException", "this endpoint has no key for the runtime API")
            auth = sigv4.parse(decode(b"authorization"), amz_date)
            body, complete = await read_body(receive)
            if not complete:  # the body limit answered already, or the client left
                return
            sigv4.verify(
                auth,
                self.secret,
                sigv4.access_key_id(self.name()),
                method=scope["method"],
                raw_path=(scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0].decode("latin-1"),
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                amz_date=str(amz_date),
                body=body,
            )
        except sigv4.SignatureError as refused:
            return await aws_error(403, refused.kind, refused.message)(scope, receive, send)
        await self.app(scope, replaying(body, receive), send)


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether it all came (not cut off by the body limit or a client that left)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` whole first, then whatever comes (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def error_type(status: int) -> str:
    if status in (429, 503):
        return "ServiceUnavailable"
    return "InternalFailure" if status >= 500 else "ValidationError"


class AwsErrors:
    """Rewrites an error answer under :data:`PREFIX` that is in kennel's shape (``{"error": {"code",
    "message"}}``, from the Host check, the body limit, an overload) into AWS's, keeping its status and its other
    headers; an answer that names its AWS error type already is left as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                if message["status"] >= 400 and ERROR_TYPE.lower().encode() not in names:
                    start = message  # held until the body is in
                    return
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await reshape(start, b"".join(chunks), send)

        await self.app(scope, receive, reshaping_send)


async def reshape(start: Message, body: bytes, send: Send) -> None:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace") or "error"
    status = start["status"]
    kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
    reshaped = json.dumps({"message": message}).encode()
    headers = [
        *kept,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(reshaped)).encode()),
        (ERROR_TYPE.encode(), error_type(status).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reshaped})

"""The FastAPI app of ``kennel serve``: short routes around :class:`kennel.serve.Endpoint` and a dynamic batcher.

Every refusal is a 4xx ``{"error": {"code", "message"}}`` (codes in :mod:`kennel.serve.inputs`); the model is
loaded once in ``lifespan``; the body size limit is enforced while the body streams in, before it is all read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kennel import serve_defaults as defaults
from kennel.serve import Endpoint, EndpointOptions, FaceSearch, Prepared
from kennel.serve.batcher import BatcherStopped, DynamicBatcher
from kennel.serve.inputs import InputError
from kennel.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ROUTES = frozenset({"/invocations", "/predict", "/ping", "/model", "/metrics", "/"})


class ServeSettings(BaseSettings):
    """Endpoint settings; each can also come from ``KENNEL_SERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="KENNEL_SERVE_")

    max_body_bytes: int = defaults.MAX_BODY_BYTES
    max_pixels: int = defaults.MAX_PIXELS
    max_batch_size: int = defaults.MAX_BATCH_SIZE
    max_wait_ms: float = defaults.MAX_WAIT_MS
    top_k: int = defaults.TOP_K
    runtime: str = defaults.RUNTIME  # an inference backend, a runtime, or auto (kennel.inference)
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = defaults.PRECISION
    dog_threshold: float = defaults.DOG_THRESHOLD
    faces: FaceSearch = defaults.FACES

    def endpoint_options(self) -> EndpointOptions:
        return EndpointOptions(self.max_pixels, self.top_k, self.dog_threshold, self.faces)


class Label(BaseModel):
    label: str
    probability: float
    index: int


class Answer(BaseModel):
    """What ``/invocations`` and ``/predict`` answer (``available: false`` marks a verdict that could not be made)."""

    predictions: list[Label]
    dog: dict[str, float | bool] = Field(examples=[{"is_dog": True, "score": 0.97}])
    human_face: dict[str, int | bool] = Field(examples=[{"found": False, "count": 0, "searched": False}])
    model: dict[str, str | int] = Field(examples=[{"backbone": "tf_efficientnet_lite0", "classes": 133}])
    latency_ms: float


class ErrorBody(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in {
        400: "empty body, corrupt image, bad base64 or JSON, bad top_k",
        413: "body over the size limit",
        415: "content type not accepted, or the bytes are not an image",
        422: "too many pixels, extreme aspect ratio, or an animated image",
    }.items()
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
INVOCATIONS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{kind: _BINARY for kind in ("image/jpeg", "image/png", "image/webp", "image/gif", "application/x-image")},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "base64"}, "top_k": {"type": "integer"}},
                }
            },
        },
    }
}


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """413 for a POST whose Content-Length, or whose bytes as they arrive, pass ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_large = error(413, "body_too_large", f"the body is over the limit of {self.max_bytes:,} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
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


class Observe:
    """Counts every HTTP answer by route and status and times it."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.observe_request(route, status, time.perf_counter() - started)


def create_app(artifact_dir: Path | str, settings: ServeSettings | None = None, endpoint: Endpoint | None = None):
    """The app for the artifact in ``artifact_dir``; tests may pass a ready ``endpoint`` instead of loading one."""
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ep = endpoint or await asyncio.to_thread(
            Endpoint.load, artifact_dir, settings.runtime, settings.endpoint_options(), settings.precision
        )
        batcher = DynamicBatcher(
            ep.predictor.predict_batch, settings.max_batch_size, settings.max_wait_ms, metrics.observe_batch
        )
        app.state.endpoint, app.state.batcher = ep, batcher
        async with batcher:
            log.info(
                "serving %s (%s, %s)", artifact_dir, ep.predictor.artifact.info.backbone, ep.predictor.engine.describe()
            )
            yield

    app = FastAPI(title="kennel endpoint", summary="Dog breeds (or your classes) from a photo", lifespan=lifespan)
    metrics = ServeMetrics(lambda: app.state.batcher.depth if hasattr(app.state, "batcher") else 0)
    app.state.settings, app.state.metrics = settings, metrics

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)  # outermost: it also counts the 413s of BodyLimit

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        metrics.errors.labels(exc.code).inc()
        return error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("bad_request").inc()
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())  # FastAPI's shape
        return error(400, "bad_request", details or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        metrics.errors.labels(code).inc()
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(BatcherStopped)
    async def stopped(request: Request, exc: BatcherStopped) -> JSONResponse:
        return error(503, "unavailable", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        metrics.errors.labels("internal").inc()
        return error(500, "internal", f"{type(exc).__name__}: the server failed on this request")

    async def answer(request: Request, prepare, *args: Any) -> dict[str, Any]:
        started = time.perf_counter()
        ep: Endpoint = request.app.state.endpoint
        prepared: Prepared = await asyncio.to_thread(prepare, *args)
        outputs = await request.app.state.batcher.submit(prepared.tensor)
        return await asyncio.to_thread(ep.respond, outputs, prepared, started)

    @app.post(
        "/invocations",
        summary="Predict from the photo's bytes, or JSON {image: base64, top_k}",
        responses={200: {"model": Answer}, **ERRORS},
        openapi_extra=INVOCATIONS_BODY,
    )
    async def invocations(request: Request, top_k: str | None = None) -> dict[str, Any]:
        body = b"".join([chunk async for chunk in request.stream()])
        ep: Endpoint = request.app.state.endpoint
        return await answer(request, ep.prepare, body, request.headers.get("content-type"), top_k)

    @app.post(
        "/predict",
        summary="Predict from an uploaded file (multipart field 'file')",
        responses={200: {"model": Answer}, **ERRORS},
    )
    async def predict(request: Request, file: UploadFile = File(...), top_k: str | None = Form(None)) -> dict[str, Any]:
        body = await file.read()
        ep: Endpoint = request.app.state.endpoint
        content_type = (
            file.content_type if file.content_type not in (None, "application/octet-stream") else "image/jpeg"
        )
        return await answer(request, ep.prepare, body, content_type, top_k or request.query_params.get("top_k"))

    @app.get("/ping", summary="Health check (SageMaker)")
    async def ping(request: Request) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model", summary="Classes, backbone, metrics and preprocessing of the model served")
    async def model(request: Request) -> dict[str, Any]:
        return request.app.state.endpoint.model_info()

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    if (STATIC / "index.html").is_file():

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

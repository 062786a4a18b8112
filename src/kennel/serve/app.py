"""The FastAPI app of ``kennel serve``: short routes around :class:`kennel.serve.Endpoint` and a dynamic batcher.

Every refusal is a 4xx ``{"error": {"code", "message"}}`` (codes in :mod:`kennel.serve.inputs`), every overload a
503 with ``Retry-After``. The model loads and warms up in the background once the server listens: the liveness
route answers at once, the readiness routes (and SageMaker's ``/ping``) only when the model can serve, and
prediction requests that arrive before wait for it. A request gets ``request_timeout_s`` from its first byte to
its answer; at most ``max_queue`` are inside the endpoint at once; one whose client has gone is dropped before the
model sees it. The body size limit is enforced while the body streams in, before it is all read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import kennel
from kennel.predictor import Predictor
from kennel.serve import Endpoint, Prepared
from kennel.serve.batcher import BatcherStopped, DynamicBatcher
from kennel.serve.guard import guard_stack
from kennel.serve.inputs import InputError
from kennel.serve.limits import BodyLimit, Linger, error
from kennel.serve.metrics import ServeMetrics
from kennel.serve.schema import ERRORS, INVOCATIONS_BODY, TOKEN, Answer
from kennel.serve.settings import ServeSettings
from kennel.serve.tokens import is_loopback

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SUMMARY = "Dog breeds (or your classes) from a photo"
HEALTH = ("/ping", "/v2/health/live", "/v2/health/ready")
ROUTES = frozenset({"/invocations", "/predict", *HEALTH, "/model", "/metrics", "/", "/v2"})


class Unavailable(Exception):
    """A request the endpoint cannot take now: a 503 with ``Retry-After``."""

    def __init__(self, code: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


def model_name(artifact_dir: Path | str) -> str:
    """The name the v2 routes use: the job's folder name for a job's ``model/`` folder, else the folder's own."""
    folder = Path(artifact_dir).resolve()
    return folder.parent.name if folder.name == "model" and folder.parent.name else folder.name


def warm_up(predictor: Predictor, batch_sizes: list[int]) -> None:
    """One model call at every batch size the batcher makes, so that the first requests do not pay for the
    runtime's first runs and memory plans (ONNX Runtime plans per input shape)."""
    import torch

    size = predictor.input_size
    for n in batch_sizes:
        predictor.predict_batch(torch.zeros(n, 3, size, size))


async def until_disconnected(request: Request) -> None:
    """Return once the client has gone. Only after the body has been read: this takes the request's messages."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
    name = settings.model_name or model_name(artifact_dir)

    async def load() -> None:
        started = time.perf_counter()
        try:
            ep = endpoint or await asyncio.to_thread(
                Endpoint.load, artifact_dir, settings.runtime, settings.endpoint_options(), settings.precision
            )
            await asyncio.to_thread(warm_up, ep.predictor, batcher.allowed_sizes)
        except Exception as exc:  # the server stays up to say so: liveness fails, and a probe restarts it
            log.exception("the model in %s failed to load", artifact_dir)
            app.state.load_error = f"the model failed to load ({type(exc).__name__}: {exc})"
            return
        app.state.endpoint = ep
        app.state.ready.set()
        log.info(
            "serving %s (%s, %s), ready in %.1f s",
            artifact_dir,
            ep.predictor.artifact.info.backbone,
            ep.predictor.engine.describe(),
            time.perf_counter() - started,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready, app.state.load_error, app.state.in_flight = asyncio.Event(), None, 0
        async with batcher:
            loading = asyncio.create_task(load(), name="kennel-load-model")
            try:
                yield
            finally:
                loading.cancel()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc from the package, so they work offline.
    app = FastAPIOffline(title="kennel endpoint", summary=SUMMARY, lifespan=lifespan)
    metrics = ServeMetrics(lambda: batcher.depth, lambda: getattr(app.state, "in_flight", 0))
    # The model is looked up at each call: it loads after the batcher starts, and tests swap run_batch.
    batcher = DynamicBatcher(
        lambda batch: app.state.endpoint.predictor.predict_batch(batch),
        settings.max_batch_size,
        settings.max_wait_ms,
        metrics.observe_batch,
    )
    app.state.settings, app.state.metrics, app.state.batcher = settings, metrics, batcher

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    guards = guard_stack(
        token=settings.token.get_secret_value() if settings.token is not None else None,
        loopback=is_loopback(settings.host),
        allowed_hosts=settings.allowed_hosts,
        cors_origins=settings.cors_origins,
    )
    for middleware, args, kwargs in reversed(guards):  # add_middleware puts each outside the ones before
        app.add_middleware(middleware, *args, **kwargs)
    app.add_middleware(Linger)  # outside every early answer (413, 401, 503): each is read by the client
    app.add_middleware(Observe, metrics=metrics)  # outermost: it also counts the answers of the others

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

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        metrics.errors.labels(exc.code).inc()
        return error(503, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(BatcherStopped)
    async def stopped(request: Request, exc: BatcherStopped) -> JSONResponse:
        metrics.errors.labels("unavailable").inc()
        return error(503, "unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        metrics.errors.labels("internal").inc()
        return error(500, "internal", f"{type(exc).__name__}: the server failed on this request")

    async def ready_endpoint(request: Request) -> Endpoint:
        """The endpoint once the model is loaded; a request that comes earlier waits (within its timeout)."""
        state = request.app.state
        if state.load_error is not None:
            raise Unavailable("unavailable", state.load_error, retry_after_s=30)
        await state.ready.wait()
        return state.endpoint

    async def admitted(request: Request, work: Callable[[], Awaitable[Any]]) -> Any:
        """``work`` for one prediction request: refused past ``max_queue``, a 503 past the request timeout, and
        dropped (the model never sees it) if the client goes away before its answer."""
        state = request.app.state
        if state.in_flight >= settings.max_queue:
            raise Unavailable("overloaded", f"the endpoint has {settings.max_queue} requests in hand; retry shortly")
        state.in_flight += 1
        try:
            return await asyncio.wait_for(work(), settings.request_timeout_s)
        except asyncio.TimeoutError:
            limit = settings.request_timeout_s
            raise Unavailable("timeout", f"no answer within the request timeout of {limit:g} s; retry later") from None
        finally:
            state.in_flight -= 1

    async def answer(request: Request, prepare: Callable[..., Prepared], *args: Any) -> dict[str, Any]:
        started = time.perf_counter()
        ep = await ready_endpoint(request)

        async def predict() -> dict[str, Any]:
            prepared: Prepared = await asyncio.to_thread(prepare, ep, *args)
            outputs = await batcher.submit(prepared.tensor)
            return await asyncio.to_thread(ep.respond, outputs, prepared, started)

        prediction = asyncio.ensure_future(predict())
        gone = asyncio.ensure_future(until_disconnected(request))
        try:
            await asyncio.wait({prediction, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not prediction.done():  # the client left, or the request timed out: the batcher skips it
                prediction.cancel()
        if not prediction.done():
            metrics.errors.labels("client_gone").inc()
            return error(499, "client_gone", "the client closed the connection before the answer")
        return prediction.result()

    @app.post(
        "/invocations",
        summary="Predict from the photo's bytes, or JSON {image: base64, top_k}",
        responses={200: {"model": Answer}, **ERRORS},
        openapi_extra=INVOCATIONS_BODY,
        dependencies=TOKEN,
    )
    async def invocations(request: Request, top_k: str | None = None) -> Any:
        async def work() -> Any:
            body = b"".join([chunk async for chunk in request.stream()])
            return await answer(request, Endpoint.prepare, body, request.headers.get("content-type"), top_k)

        return await admitted(request, work)

    @app.post(
        "/predict",
        summary="Predict from an uploaded file (multipart field 'file')",
        responses={200: {"model": Answer}, **ERRORS},
        dependencies=TOKEN,
    )
    async def predict(request: Request, file: UploadFile = File(...), top_k: str | None = Form(None)) -> Any:
        files = (await request.form()).getlist("file")
        if len(files) != 1:
            raise InputError(400, "bad_request", f"send one photo in the form field 'file', not {len(files)}")

        async def work() -> Any:
            body = await file.read()
            content_type = (
                file.content_type if file.content_type not in (None, "application/octet-stream") else "image/jpeg"
            )
            k = top_k or request.query_params.get("top_k")
            return await answer(request, Endpoint.prepare, body, content_type, k)

        return await admitted(request, work)

    def readiness(request: Request) -> JSONResponse:
        ready = request.app.state.ready.is_set()
        body: dict[str, Any] = {"ready": ready}
        if not ready:
            body["reason"] = request.app.state.load_error or "the model is loading"
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/ping", summary="Health check (SageMaker): 200 once the model can serve")
    async def ping(request: Request) -> JSONResponse:
        response = readiness(request)
        return JSONResponse({"status": "ok" if response.status_code == 200 else "loading"}, response.status_code)

    @app.get("/v2/health/live", summary="Liveness (Open Inference Protocol): the server runs")
    async def live(request: Request) -> JSONResponse:
        failed = request.app.state.load_error
        return JSONResponse({"live": failed is None, **({"reason": failed} if failed else {})}, 503 if failed else 200)

    @app.get("/v2/health/ready", summary="Readiness (Open Inference Protocol): the model is loaded and warm")
    async def ready(request: Request) -> JSONResponse:
        return readiness(request)

    @app.get("/v2", summary="Server metadata (Open Inference Protocol)", dependencies=TOKEN)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kennel", "version": kennel.__version__, "extensions": []}

    def named(model: str) -> None:
        if model != name:
            raise StarletteHTTPException(404, f"no model {model!r} here; this endpoint serves {name!r}")

    @app.get("/v2/models/{model}", summary="Model metadata (Open Inference Protocol)", dependencies=TOKEN)
    async def model_metadata(request: Request, model: str) -> dict[str, Any]:
        named(model)
        ep = await ready_endpoint(request)
        size, classes = ep.predictor.input_size, len(ep.predictor.class_names)
        return {
            "name": name,
            "versions": [],
            "platform": ep.predictor.runtime,
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}],
        }

    @app.get("/v2/models/{model}/ready", summary="Model readiness (Open Inference Protocol)", dependencies=TOKEN)
    async def model_ready(request: Request, model: str) -> JSONResponse:
        named(model)
        return readiness(request)

    @app.get("/model", summary="Classes, backbone, metrics and preprocessing of the model served", dependencies=TOKEN)
    async def model_info(request: Request) -> dict[str, Any]:
        return {"name": name, **(await ready_endpoint(request)).model_info()}

    @app.get("/metrics", summary="Prometheus metrics", dependencies=TOKEN)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    if (STATIC / "index.html").is_file():

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

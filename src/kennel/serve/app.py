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
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

import kennel
from kennel.allocator import give_memory_back
from kennel.serve import Endpoint, Prepared
from kennel.serve.batcher import DynamicBatcher
from kennel.serve.capture import Capture
from kennel.serve.errors import answer_errors
from kennel.serve.guard import guard_stack
from kennel.serve.inputs import InputError
from kennel.serve.limits import BodyLimit, Linger, Unavailable, error
from kennel.serve.metrics import Observe, ServeMetrics
from kennel.serve.schema import ERRORS, INVOCATIONS_BODY, TOKEN, Answer
from kennel.serve.settings import ServeSettings
from kennel.serve.slot import Loaded, ModelSlot, Source, note_deployment, resolve_source
from kennel.serve.tokens import is_loopback

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SUMMARY = "Dog breeds (or your classes) from a photo"
HEALTH = ("/ping", "/v2/health/live", "/v2/health/ready")
ROUTES = frozenset({"/invocations", "/predict", "/explain", *HEALTH, "/model", "/metrics", "/", "/v2", "/reload"})


async def until_disconnected(request: Request) -> None:
    """Return once the client has gone. Only after the body has been read: this takes the request's messages."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(artifact_dir: Path | str, settings: ServeSettings | None = None, endpoint: Endpoint | None = None):
    """The app for the model at ``artifact_dir`` (a folder, or a registry URI ``models:/NAME@ALIAS``); tests may
    pass a ready ``endpoint`` to serve first instead of loading one."""
    settings = settings or ServeSettings()
    ref = settings.model_ref or str(artifact_dir)
    metrics = ServeMetrics(lambda: slot.current.batcher.depth if slot.current else 0, lambda: in_flight)
    in_flight = 0

    def make_batcher(ep: Endpoint) -> DynamicBatcher:
        return DynamicBatcher(
            ep.predictor.predict_batch, settings.max_batch_size, settings.max_wait_ms, metrics.observe_batch
        )

    slot = ModelSlot(make_batcher)
    capture = None
    if settings.capture_dir is not None:
        capture = Capture(settings.capture_dir, sample=settings.capture_sample, photos=settings.capture_photos)
    # Decodes wait for their slots in threads of their own, so that a burst of huge photos never holds the threads
    # the model calls and the answers run in.
    decoding = ThreadPoolExecutor(max(4, 2 * settings.max_decodes), thread_name_prefix="kennel-decode")

    async def load(first: Endpoint | None) -> tuple[Endpoint, Source]:
        source = await asyncio.to_thread(resolve_source, ref, settings.model_name)
        options = settings.endpoint_options()
        ep = first or await asyncio.to_thread(
            Endpoint.load, source.folder, settings.runtime, options, settings.precision
        )
        return ep, source

    async def switch(event: str, first: Endpoint | None = None) -> Loaded:
        started = time.perf_counter()
        previous = slot.current.source if slot.current is not None else None
        loaded = await slot.switch(lambda: load(first))
        app.state.batcher = loaded.batcher  # the current one, for tests and tools
        give_memory_back()  # what loading and warming up left free, before the first requests
        info, source = loaded.endpoint.predictor, loaded.source
        log.info(
            "%s %s%s (%s, %s), ready in %.1f s",
            "serving" if event == "serve" else "switched to",
            source.name,
            f" version {source.version}" if source.version else f" from {source.folder}",
            info.artifact.info.backbone,
            info.engine.describe(),
            time.perf_counter() - started,
        )
        if source.uri is not None:
            await asyncio.to_thread(note_deployment, source, previous)
        return loaded

    async def first_load() -> None:
        try:
            await switch("serve", endpoint)
        except Exception as exc:  # the server stays up to say so: liveness fails, and a probe restarts it
            log.exception("the model %s failed to load", ref)
            slot.failed(f"the model failed to load ({type(exc).__name__}: {exc})")

    async def follow() -> None:
        """Serve the version the alias names whenever it moves: one small registry query per look; the version
        is fetched and loaded only when it differs from the one serving."""
        from kennel.model_registry import alias_version, parse_uri

        name, _, alias = parse_uri(ref)
        while True:
            await asyncio.sleep(settings.follow_interval_s)
            try:
                named = await asyncio.to_thread(alias_version, name, str(alias))
                if slot.current is not None and named != slot.current.source.version:
                    await switch("follow")
            except Exception:
                log.exception("following %s: the new version could not be served; the current one goes on", ref)

    def on_sighup() -> None:
        task = asyncio.ensure_future(switch("reload"))
        task.add_done_callback(lambda t: t.cancelled() or (t.exception() and log.error("reload: %s", t.exception())))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(first_load(), name="kennel-load-model")]
        if settings.follow_alias:
            tasks.append(asyncio.create_task(follow(), name="kennel-follow-alias"))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # main thread, POSIX only
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await slot.close()
            decoding.shutdown(wait=False, cancel_futures=True)
            if capture is not None:
                await asyncio.to_thread(capture.close)  # writes what is queued

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc from the package, so they work offline.
    app = FastAPIOffline(title="kennel endpoint", summary=SUMMARY, lifespan=lifespan)
    app.state.settings, app.state.metrics, app.state.slot = settings, metrics, slot

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
    app.add_middleware(Observe, metrics=metrics, routes=ROUTES)  # outermost: it counts the others' answers too

    answer_errors(app, metrics)

    async def admitted(work: Callable[[], Awaitable[Any]]) -> Any:
        """``work`` for one prediction request: refused past ``max_queue``, a 503 past the request timeout."""
        nonlocal in_flight
        if in_flight >= settings.max_queue:
            raise Unavailable("overloaded", f"the endpoint has {settings.max_queue} requests in hand; retry shortly")
        in_flight += 1
        try:
            return await asyncio.wait_for(work(), settings.request_timeout_s)
        except asyncio.TimeoutError:
            limit = settings.request_timeout_s
            raise Unavailable("timeout", f"no answer within the request timeout of {limit:g} s; retry later") from None
        finally:
            in_flight -= 1

    async def answer(request: Request, body: bytes, content_type: str | None, top_k: Any) -> Any:
        """The answer for one photo, from the model current when the request came; dropped (the model never sees
        it) if the client goes away first."""
        started = time.perf_counter()
        async with slot.use() as loaded:
            ep = loaded.endpoint

            async def predict() -> dict[str, Any]:
                loop = asyncio.get_running_loop()
                prepared: Prepared = await loop.run_in_executor(decoding, ep.prepare, body, content_type, top_k)
                outputs = await loaded.batcher.submit(prepared.tensor)
                response = await asyncio.to_thread(ep.respond, outputs, prepared, started)
                if capture is not None:  # never blocks: the capture's own thread writes the line
                    capture.record(response, prepared.image, body, loaded.served)
                return response

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
            return await answer(request, body, request.headers.get("content-type"), top_k)

        return await admitted(work)

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
            kind = file.content_type if file.content_type not in (None, "application/octet-stream") else "image/jpeg"
            return await answer(request, body, kind, top_k or request.query_params.get("top_k"))

        return await admitted(work)

    @app.post(
        "/explain",
        summary="Where the model looked: the photo's bytes in, a PNG of a heatmap over it out (Grad-CAM)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the photo with the heatmap over it"}, **ERRORS},
        dependencies=TOKEN,
    )
    async def explain(request: Request) -> Response:
        async def work() -> Response:
            body = b"".join([chunk async for chunk in request.stream()])
            async with slot.use() as loaded:
                png = await asyncio.to_thread(loaded.endpoint.explain, body, request.headers.get("content-type"))
            return Response(png, media_type="image/png")

        return await admitted(work)

    @app.post(
        "/reload", summary="Load the model again (a registry alias: the version it names now)", dependencies=TOKEN
    )
    async def reload_route() -> dict[str, Any]:
        try:
            loaded = await switch("reload")
        except Exception as exc:
            message = f"the model could not be loaded again ({exc}); the current one goes on serving"
            raise Unavailable("reload_failed", message) from None
        return {"serving": loaded.source.describe()}

    def readiness() -> JSONResponse:
        ready = slot.ready.is_set()
        body: dict[str, Any] = {"ready": ready}
        if not ready:
            body["reason"] = slot.error or "the model is loading"
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/ping", summary="Health check (SageMaker): 200 once the model can serve")
    async def ping() -> JSONResponse:
        response = readiness()
        return JSONResponse({"status": "ok" if response.status_code == 200 else "loading"}, response.status_code)

    @app.get("/v2/health/live", summary="Liveness (Open Inference Protocol): the server runs")
    async def live() -> JSONResponse:
        failed = slot.error if slot.current is None else None
        return JSONResponse({"live": failed is None, **({"reason": failed} if failed else {})}, 503 if failed else 200)

    @app.get("/v2/health/ready", summary="Readiness (Open Inference Protocol): the model is loaded and warm")
    async def ready() -> JSONResponse:
        return readiness()

    @app.get("/v2", summary="Server metadata (Open Inference Protocol)", dependencies=TOKEN)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kennel", "version": kennel.__version__, "extensions": []}

    async def named(model: str) -> Loaded:
        async with slot.use() as loaded:
            if model != loaded.source.name:
                raise StarletteHTTPException(
                    404, f"no model {model!r} here; this endpoint serves {loaded.source.name!r}"
                )
            return loaded

    @app.get("/v2/models/{model}", summary="Model metadata (Open Inference Protocol)", dependencies=TOKEN)
    async def model_metadata(model: str) -> dict[str, Any]:
        loaded = await named(model)
        predictor = loaded.endpoint.predictor
        size, classes = predictor.input_size, len(predictor.class_names)
        return {
            "name": loaded.source.name,
            "versions": [loaded.source.version] if loaded.source.version else [],
            "platform": predictor.runtime,
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}],
        }

    @app.get("/v2/models/{model}/ready", summary="Model readiness (Open Inference Protocol)", dependencies=TOKEN)
    async def model_ready(model: str) -> JSONResponse:
        await named(model)
        return readiness()

    @app.get("/model", summary="Classes, backbone, metrics and preprocessing of the model served", dependencies=TOKEN)
    async def model_info() -> dict[str, Any]:
        async with slot.use() as loaded:
            return {**loaded.source.describe(), **loaded.endpoint.model_info()}

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

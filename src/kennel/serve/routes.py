"""The endpoint's own routes: predictions, health (SageMaker's ``/ping`` and the Open Inference Protocol's v2),
model metadata, metrics and reload. Each is a few lines around :class:`kennel.serve.service.Service`, the same
whatever kind of model it serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import kennel
from kennel.serve.inputs import InputError
from kennel.serve.limits import Unavailable
from kennel.serve.schema import ERRORS, INVOCATIONS_BODY, TOKEN, Answer
from kennel.serve.served import CUSTOM_ATTRIBUTES, Invocation, Reply
from kennel.serve.service import Service
from kennel.serve.slot import Loaded

HEALTH = ("/ping", "/v2/health/live", "/v2/health/ready")
PREDICTIONS = ("/invocations", "/predict", "/explain")

router = APIRouter()


def service_of(request: Request) -> Service:
    return request.app.state.service


def invocation(request: Request, body: bytes, content_type: str | None = None) -> Invocation:
    headers = request.headers
    return Invocation(
        body,
        content_type if content_type is not None else headers.get("content-type"),
        headers.get("accept"),
        dict(request.query_params),
        headers.get(CUSTOM_ATTRIBUTES),
    )


def reply_response(reply: Reply) -> Response:
    headers = {CUSTOM_ATTRIBUTES: reply.custom_attributes} if reply.custom_attributes else None
    return Response(reply.body, media_type=reply.content_type, headers=headers)


@router.post(
    "/invocations",
    summary="Predict from the request body: a photo's bytes or JSON {image: base64, top_k} (handlers: their types)",
    response_class=Response,
    responses={200: {"model": Answer}, **ERRORS},
    openapi_extra=INVOCATIONS_BODY,
    dependencies=TOKEN,
)
async def invocations(request: Request, top_k: str | None = None) -> Response:
    service = service_of(request)

    async def work() -> Reply:
        body = b"".join([chunk async for chunk in request.stream()])
        return await service.invoke(request, invocation(request, body))

    return reply_response(await service.admitted(work))


@router.post(
    "/predict",
    summary="Predict from an uploaded file (multipart field 'file')",
    response_class=Response,
    responses={200: {"model": Answer}, **ERRORS},
    dependencies=TOKEN,
)
async def predict(request: Request, file: UploadFile = File(...), top_k: str | None = Form(None)) -> Response:
    files = (await request.form()).getlist("file")
    if len(files) != 1:
        raise InputError(400, "bad_request", f"send one photo in the form field 'file', not {len(files)}")
    service = service_of(request)

    async def work() -> Reply:
        body = await file.read()
        kind = file.content_type if file.content_type not in (None, "application/octet-stream") else "image/jpeg"
        asked = invocation(request, body, kind)
        if top_k:
            asked = asked._replace(params={**asked.params, "top_k": top_k})
        return await service.invoke(request, asked)

    return reply_response(await service.admitted(work))


@router.post(
    "/explain",
    summary="Where the model looked: the photo's bytes in, a PNG of a heatmap over it out (Grad-CAM)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the photo with the heatmap over it"}, **ERRORS},
    dependencies=TOKEN,
)
async def explain(request: Request) -> Response:
    service = service_of(request)

    async def work() -> Response:
        body = b"".join([chunk async for chunk in request.stream()])
        png = await service.explain(body, request.headers.get("content-type"))
        return Response(png, media_type="image/png")

    return await service.admitted(work)


@router.post("/reload", summary="Load the model again (a registry alias: the version it names now)", dependencies=TOKEN)
async def reload_route(request: Request) -> dict[str, Any]:
    try:
        loaded = await service_of(request).switch("reload")
    except Exception as exc:
        message = f"the model could not be loaded again ({exc}); the current one goes on serving"
        raise Unavailable("reload_failed", message) from None
    return {"serving": loaded.source.describe()}


def readiness(request: Request) -> JSONResponse:
    ready, reason = service_of(request).readiness()
    return JSONResponse({"ready": ready, **({"reason": reason} if reason else {})}, status_code=200 if ready else 503)


@router.get("/ping", summary="Health check (SageMaker): 200 once the model can serve")
async def ping(request: Request) -> JSONResponse:
    ready, _ = service_of(request).readiness()
    return JSONResponse({"status": "ok" if ready else "loading"}, 200 if ready else 503)


@router.get("/v2/health/live", summary="Liveness (Open Inference Protocol): the server runs")
async def live(request: Request) -> JSONResponse:
    slot = service_of(request).slot
    failed = slot.error if slot.current is None else None
    return JSONResponse({"live": failed is None, **({"reason": failed} if failed else {})}, 503 if failed else 200)


@router.get("/v2/health/ready", summary="Readiness (Open Inference Protocol): the model is loaded and warm")
async def ready(request: Request) -> JSONResponse:
    return readiness(request)


@router.get("/v2", summary="Server metadata (Open Inference Protocol)", dependencies=TOKEN)
async def server_metadata() -> dict[str, Any]:
    return {"name": "kennel", "version": kennel.__version__, "extensions": []}


async def named(request: Request, model: str) -> Loaded:
    async with service_of(request).slot.use() as loaded:
        if model != loaded.source.name:
            raise StarletteHTTPException(404, f"no model {model!r} here; this endpoint serves {loaded.source.name!r}")
        return loaded


@router.get("/v2/models/{model}", summary="Model metadata (Open Inference Protocol)", dependencies=TOKEN)
async def model_metadata(request: Request, model: str) -> dict[str, Any]:
    loaded = await named(request, model)
    versions = [loaded.source.version] if loaded.source.version else []
    return {"name": loaded.source.name, "versions": versions, **loaded.model.signature()}


@router.get("/v2/models/{model}/ready", summary="Model readiness (Open Inference Protocol)", dependencies=TOKEN)
async def model_ready(request: Request, model: str) -> JSONResponse:
    await named(request, model)
    return readiness(request)


@router.get("/model", summary="What the endpoint serves: the model's name, kind and details", dependencies=TOKEN)
async def model_info(request: Request) -> dict[str, Any]:
    async with service_of(request).slot.use() as loaded:
        return {**loaded.source.describe(), **loaded.model.info()}


@router.get("/metrics", summary="Prometheus metrics", dependencies=TOKEN)
async def prometheus(request: Request) -> Response:
    metrics = service_of(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)

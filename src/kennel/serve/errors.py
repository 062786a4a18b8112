"""The endpoint's error answers: every refusal and failure as ``{"error": {"code", "message"}}``, counted by code
in ``/metrics``. 4xx for what the client can fix, 503 with ``Retry-After`` for what waiting fixes, 500 otherwise."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kennel.serve.batcher import BatcherStopped
from kennel.serve.inputs import InputError
from kennel.serve.limits import Unavailable, error
from kennel.serve.metrics import ServeMetrics
from kennel.serve.service import ClientGone

log = logging.getLogger("kennel.serve.app")


def answer_errors(app: FastAPI, metrics: ServeMetrics) -> None:
    """Install the error handlers on ``app``."""

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

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        metrics.errors.labels("client_gone").inc()
        return error(499, "client_gone", "the client closed the connection before the answer")

    @app.exception_handler(BatcherStopped)
    async def stopped(request: Request, exc: BatcherStopped) -> JSONResponse:
        metrics.errors.labels("unavailable").inc()
        return error(503, "unavailable", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        metrics.errors.labels("internal").inc()
        return error(500, "internal", f"{type(exc).__name__}: the server failed on this request")

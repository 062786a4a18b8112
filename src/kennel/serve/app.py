"""The FastAPI app of ``kennel serve``: the routes (:mod:`kennel.serve.routes`, :mod:`kennel.serve.runtime_api`)
around one :class:`~kennel.serve.service.Service`, inside the guards and limits every endpoint has.

Every refusal is a 4xx ``{"error": {"code", "message"}}`` (codes in :mod:`kennel.serve.inputs`), every overload a
503 with ``Retry-After``; the SageMaker runtime route answers in AWS's shape instead. The model loads and warms up
in the background once the server listens: the liveness route answers at once, the readiness routes (and
SageMaker's ``/ping``) only when the model can serve, and prediction requests that arrive before wait for it. The
body size limit is enforced while the body streams in, before it is all read.

What is served comes from a :class:`~kennel.serve.served.ModelLoader`: kennel's artifact (a folder or a registry
URI, :class:`~kennel.serve.artifact_model.ArtifactLoader`) or the user's inference handlers
(:class:`~kennel.serve.handler_model.HandlerLoader`). Nothing below depends on which.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import Secret

from kennel.serve import routes, runtime_api
from kennel.serve.artifact_model import ArtifactLoader
from kennel.serve.errors import answer_errors
from kennel.serve.guard import guard_stack
from kennel.serve.limits import BodyLimit, Linger
from kennel.serve.metrics import Observe
from kennel.serve.schema import Answer
from kennel.serve.served import ModelLoader, ServedModel
from kennel.serve.service import Service
from kennel.serve.settings import ServeSettings
from kennel.serve.slot import Source
from kennel.serve.tokens import is_loopback

__all__ = ["STATIC", "Answer", "ServeSettings", "create_app"]

STATIC = Path(__file__).parent / "static"
SUMMARY = "Dog breeds (or your classes) from a photo"
# The routes /metrics counts by path; every other path is counted as "other", so a scan cannot make a label per path.
ROUTES = frozenset({*routes.PREDICTIONS, *routes.HEALTH, "/model", "/metrics", "/", "/v2", "/reload"})


def create_app(
    served: ModelLoader | Path | str,
    settings: ServeSettings | None = None,
    first: tuple[ServedModel, Source] | None = None,
) -> FastAPI:
    """The app for ``served``: a loader, or a model folder or registry URI (``models:/NAME@ALIAS``) of kennel's
    own. ``first``: a model loaded already (by the command line, to say at start why it cannot be), served first
    instead of loading one."""
    settings = settings or ServeSettings()
    loader = served if not isinstance(served, (Path, str)) else ArtifactLoader(settings.model_ref or served)
    service = Service(loader, settings, first)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc from the package, so they work offline.
    app = FastAPIOffline(title="kennel endpoint", summary=SUMMARY, lifespan=lifespan)
    app.state.settings, app.state.service, app.state.metrics = settings, service, service.metrics

    token = settings.token.get_secret_value() if settings.token is not None else None
    signing = settings.signing_key.get_secret_value() if settings.signing_key is not None else token
    # Innermost first: each add_middleware puts the new one outside the ones before.
    app.add_middleware(runtime_api.SignedOnly, secret=Secret(signing) if signing else None, name=lambda: service.name)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    guards = guard_stack(
        token=token,
        loopback=is_loopback(settings.host),
        allowed_hosts=settings.allowed_hosts,
        cors_origins=settings.cors_origins,
        signed_prefixes=(runtime_api.PREFIX,),
    )
    for middleware, args, kwargs in reversed(guards):
        app.add_middleware(middleware, *args, **kwargs)
    app.add_middleware(runtime_api.AwsErrors)  # outside every refusal on the runtime route, to reshape it
    app.add_middleware(Linger)  # outside every early answer (413, 401, 503): each is read by the client
    routes_seen = frozenset({*ROUTES, f"{runtime_api.PREFIX}{service.name}/invocations"})
    app.add_middleware(Observe, metrics=service.metrics, routes=routes_seen)  # outermost: it counts every answer

    answer_errors(app, service.metrics)
    app.include_router(routes.router)
    app.include_router(runtime_api.router)

    if (STATIC / "index.html").is_file():

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

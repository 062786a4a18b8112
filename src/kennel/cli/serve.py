"""``kennel serve JOB_OR_MODEL_DIR``: an HTTP endpoint for a model (see :mod:`kennel.serve.app`): kennel's own
artifact, or the user's inference handlers (``--entry-point inference.py --model-dir DIR``, a SageMaker
``model.tar.gz``, or a ``kennel run`` job whose source holds an ``inference.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kennel import serve_defaults as defaults
from kennel.cli.app import app
from kennel.cli.lookup import resolve_model
from kennel.cli.serve_checks import check_port, writable_folder
from kennel.errors import UsageError
from kennel.model_registry import is_registry_uri

if TYPE_CHECKING:
    from kennel.serve.package import HandlerFiles, HandlerRef
    from kennel.serve.tokens import ServeToken

# A handler endpoint's model, loaded by the command before the server starts (so that a handler file that does not
# import, or a model_fn that fails, is one line at start); the server in this same process serves it first.
_preloaded: list[Any] = []


def script_job(ref: str):
    """The ``kennel run`` job ``ref`` names, or None when it names no such job (a kennel model, a job of
    ``kennel train``, nothing)."""
    from kennel.artifact import is_artifact
    from kennel.jobs import JobNotFound, load_job

    if is_registry_uri(ref) or is_artifact(Path(ref).expanduser()):
        return None
    try:
        job = load_job(ref)
    except (JobNotFound, OSError, ValueError):
        return None
    return job if job.kind == "script" else None


def handler_ref(model: str | None, entry_point: Path | None, model_dir: Path | None) -> HandlerRef | None:
    """The user's handlers the command names, or None when it names a kennel model."""
    from kennel.serve.package import ARCHIVE_SUFFIXES, HandlerRef, job_handlers

    script = str(entry_point) if entry_point is not None else ""
    if model is None:
        if model_dir is None:
            raise UsageError("give a model (a folder, a job, models:/NAME@ALIAS or a model.tar.gz), or --model-dir")
        entry = entry_point.expanduser().resolve() if entry_point is not None else None
        return HandlerRef(entry_point=entry, model_dir=model_dir.expanduser().resolve())
    path = Path(model).expanduser()
    if model_dir is not None:
        raise UsageError(f"--model-dir is the model's folder when no MODEL is given; {model} names its own")
    if path.name.endswith(ARCHIVE_SUFFIXES) and path.is_file():
        return HandlerRef(package=path.resolve(), program=script)
    job = script_job(model)
    if job is not None:
        return job_handlers(job.path, job.id, script)
    if entry_point is not None:
        raise UsageError(
            f"--entry-point serves your own handlers, with --model-dir, a model.tar.gz or a kennel run job; "
            f"{model} is none of these"
        )
    return None


def signing_secret(bearer: ServeToken) -> ServeToken:
    """The runtime API's secret access key: the endpoint's token, or (a server with none) the token kept in
    ``$KENNEL_HOME/serve-token``, made once, so that the route that boto3 signs is never open."""
    from kennel.serve.tokens import stored_or_new_token, stored_token_path

    return bearer if bearer.value is not None else stored_or_new_token(stored_token_path())


def say_keys(name: str, bearer: ServeToken, signing: ServeToken) -> None:
    """How boto3 and the sagemaker SDK sign their requests to this endpoint; a secret is shown only when made."""
    from kennel.serve.sigv4 import access_key_id

    typer.echo(f"SageMaker runtime API: POST /endpoints/{name}/invocations (endpoint name {name!r})", err=True)
    if signing is bearer:
        secret = "the token"
    elif signing.generated:
        secret = f"{signing.value} (stored in {signing.path}, mode 0600)"
    else:
        secret = f"the one stored in {signing.path}"
    typer.echo(f"  aws_access_key_id {access_key_id(name)}, aws_secret_access_key {secret}", err=True)


def say_requirements(files: HandlerFiles) -> None:
    """What the handlers' requirements.txt lists: SageMaker installs it, kennel does not (it runs on this machine
    whatever is installed here, and installs nothing behind the user's back)."""
    path = files.requirements_file
    if path is not None:
        listed = ", ".join(files.requirements) or "nothing"
        typer.echo(f"{path} lists {listed}: not installed by kennel (pip install -r {path} if missing)", err=True)


@app.command("serve")
def serve_command(
    model: str = typer.Argument(
        None,
        help="model artifact folder, job folder, job id/name, a registered model (models:/NAME@ALIAS), a SageMaker "
        "model.tar.gz, or a kennel run job whose source has an inference.py",
    ),
    entry_point: Path = typer.Option(
        None,
        "--entry-point",
        help="your inference.py (model_fn, input_fn, predict_fn, output_fn); with a model.tar.gz or a job, the "
        "script in its code/ or source/ folder ($SAGEMAKER_PROGRAM works too)",
    ),
    model_dir: Path = typer.Option(None, "--model-dir", help="the folder your model_fn loads (SageMaker's model dir)"),
    name: str = typer.Option(
        None, "--name", help="the endpoint's name, as boto3's EndpointName gives it (default: the model's)"
    ),
    handler_threads: int = typer.Option(
        defaults.MAX_DECODES, min=1, help="requests your handlers answer at once, one per thread"
    ),
    host: str = typer.Option(defaults.HOST, help="address to bind; 0.0.0.0 to accept other machines"),
    port: int = typer.Option(defaults.PORT, help="port to listen on (the default is SageMaker's)"),
    workers: int = typer.Option(1, min=1, help="server processes, each with its own copy of the model"),
    max_batch_size: int = typer.Option(defaults.MAX_BATCH_SIZE, min=1, help="most photos per model call"),
    max_wait_ms: float = typer.Option(
        defaults.MAX_WAIT_MS, min=0, help="how long a request waits for others to share a batch"
    ),
    max_body_mb: float = typer.Option(
        defaults.MAX_BODY_BYTES / 1_000_000, min=0.001, help="largest request body, in MB (413 beyond)"
    ),
    max_pixels: int = typer.Option(defaults.MAX_PIXELS, min=1, help="largest image in pixels (422 beyond)"),
    max_decodes: int = typer.Option(
        defaults.MAX_DECODES, min=1, help="photos decoded at once (one over 13 Mpx takes several of these slots)"
    ),
    runtime: str = typer.Option(
        defaults.RUNTIME,
        "--runtime",
        "--engine",
        help="auto (the fastest measured here, see `kennel doctor`), a runtime (onnxruntime, torch) or a backend",
    ),
    precision: str = typer.Option(
        defaults.PRECISION, help="auto, fp32, bf16 or int8 (int8 needs a model trained with --precision int8 or auto)"
    ),
    dog_threshold: float = typer.Option(
        defaults.DOG_THRESHOLD, min=0, max=1, help="dog score from which a photo counts as a dog"
    ),
    faces: str = typer.Option(
        defaults.FACES, help="look for human faces: not-dog (only where no dog is seen), always, or off"
    ),
    max_queue: int = typer.Option(
        defaults.MAX_QUEUE, min=1, help="most prediction requests in hand at once (503 with Retry-After beyond)"
    ),
    request_timeout: float = typer.Option(
        defaults.REQUEST_TIMEOUT_S, min=0.001, help="seconds from a request's first byte to its answer (503 past it)"
    ),
    header_timeout: float = typer.Option(
        defaults.HEADER_TIMEOUT_S, min=0.001, help="seconds a connection may take to send its request headers"
    ),
    token: str = typer.Option(
        None, help="bearer token callers must send (default $KENNEL_TOKEN; made and stored when not on loopback)"
    ),
    token_file: Path = typer.Option(None, help="read the bearer token from this file (a mounted secret)"),
    no_auth: bool = typer.Option(False, "--no-auth", help="serve without a token, even to other machines"),
    allowed_host: list[str] = typer.Option(
        [], help="another Host name a loopback server answers (besides localhost, 127.0.0.1, [::1]); repeatable"
    ),
    cors: list[str] = typer.Option([], help="an origin whose pages may call the endpoint (CORS); repeatable"),
    follow_alias: bool = typer.Option(
        False, "--follow-alias", help="with models:/NAME@ALIAS: serve the version the alias names whenever it moves"
    ),
    follow_interval: float = typer.Option(30, min=0.1, help="seconds between looks at the alias (--follow-alias)"),
    capture: Path = typer.Option(
        None, help="append a JSON line per sampled request to rotating files in this folder (for kennel monitor)"
    ),
    capture_sample: float = typer.Option(1.0, min=0.0001, max=1, help="the share of requests --capture keeps"),
    capture_photos: bool = typer.Option(False, "--capture-photos", help="with --capture: keep the photos too"),
    graceful_s: int = typer.Option(10, help="seconds to finish in-flight requests on shutdown"),
) -> None:
    """Serve a model over HTTP: POST /invocations or /predict, GET /ping, /v2/health/*, /model, /metrics, /docs,
    and SageMaker Runtime's POST /endpoints/NAME/invocations for boto3 and the sagemaker SDK.

    On loopback (the default) no token is needed, and only requests for a loopback Host name are answered. On any
    other address every call but the health checks needs Authorization: Bearer TOKEN; see docs/guides/endpoint.md.
    The runtime route needs boto3's signature with the key pair printed at start. POST /reload or
    SIGHUP loads the model again (a registry alias: the version it names now; your handlers: imported afresh)
    beside the one serving, and switches with no request lost."""
    import json
    import os

    import uvicorn
    from pydantic import ValidationError

    from kennel.predictor import Predictor
    from kennel.serve.app import ServeSettings
    from kennel.serve.guard import check_origins
    from kennel.serve.protocol import HeaderTimeoutProtocol
    from kennel.serve.tokens import is_loopback, resolve_token
    from kennel.validation import one_line

    if follow_alias and not (model and is_registry_uri(model) and "@" in model):
        raise UsageError(f"--follow-alias follows a registry alias: give models:/NAME@ALIAS, not {model!r}")
    handlers = handler_ref(model, entry_point, model_dir)
    folder = resolve_model(model) if handlers is None else None
    if handlers is not None:
        endpoint_name = name or handlers.name
    else:
        from kennel.model_registry import parse_uri
        from kennel.serve.slot import model_name

        endpoint_name = name or (parse_uri(model)[0] if is_registry_uri(model) else model_name(folder))
    if capture is not None:
        capture = writable_folder(capture.expanduser().resolve(), "--capture")
    bearer = resolve_token(host, token=token, token_file=token_file, no_auth=no_auth)
    try:
        settings = ServeSettings(
            max_body_bytes=int(max_body_mb * 1_000_000),
            max_pixels=max_pixels,
            max_decodes=max_decodes,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            runtime=runtime,
            precision=precision,
            dog_threshold=dog_threshold,
            faces=faces,
            max_queue=max_queue,
            request_timeout_s=request_timeout,
            header_timeout_s=header_timeout,
            host=host,
            token=bearer.value,
            allowed_hosts=allowed_host,
            cors_origins=check_origins(cors),
            model_ref=model if is_registry_uri(model) else str(folder or ""),
            model_name=endpoint_name,
            handlers=handlers,
            handler_threads=handler_threads,
            follow_alias=follow_alias,
            follow_interval_s=follow_interval,
            capture_dir=capture,
            capture_sample=capture_sample,
            capture_photos=capture_photos,
        )
    except ValidationError as exc:
        raise UsageError(one_line(exc, name=lambda loc: "--" + "-".join(loc).replace("_", "-"))) from None
    check_port(host, port)
    signing = signing_secret(bearer)
    if handlers is not None:
        from kennel.serve.handler_model import HandlerLoader

        # The handlers import and model_fn runs now: what fails is one line, before the server starts.
        served, source = HandlerLoader(handlers).load(settings, endpoint_name)
        _preloaded[:] = [(served, source)] if workers == 1 else []
        what = f"{source.folder} ({served.describe()})"
    else:
        # The engine's choice is cheap (the model loads in the server): an impossible one fails here, in a line.
        engine = Predictor.load(folder, runtime=settings.runtime, precision=settings.precision).engine
        what = f"{folder} with {engine.label}"
    # Workers are separate processes: they rebuild the app from the environment (see serve_factory).
    os.environ["KENNEL_SERVE_ARTIFACT"] = str(folder or "")
    for key, value in settings.model_dump(mode="json", exclude={"token", "signing_key"}).items():
        if value is not None:
            os.environ[f"KENNEL_SERVE_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    for key, secret in (("TOKEN", bearer.value), ("SIGNING_KEY", signing.value)):
        os.environ.pop(f"KENNEL_SERVE_{key}", None)
        if secret is not None:
            os.environ[f"KENNEL_SERVE_{key}"] = secret
    typer.echo(f"serving {what} on http://{host}:{port} (docs at /docs)", err=True)
    if handlers is not None:
        say_requirements(served.files)
    if bearer.generated:  # the only time it is shown
        typer.echo(f"token (stored in {bearer.path}, mode 0600): {bearer.value}", err=True)
    elif bearer.value is not None:
        where = f" from {bearer.path}" if bearer.path else f" ({bearer.source})"
        typer.echo(f"callers need Authorization: Bearer with the token{where}", err=True)
    elif not is_loopback(host):
        typer.echo(f"warning: --no-auth: anyone who can reach {host}:{port} can call every route", err=True)
    say_keys(endpoint_name, bearer, signing)
    uvicorn.run(
        "kennel.cli.serve:serve_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HeaderTimeoutProtocol,
        timeout_graceful_shutdown=graceful_s,
        log_level="info",
    )


def log_serving() -> None:
    """The endpoint's own lines (the model served, each switch, errors) on stderr with their time, beside uvicorn's.
    uvicorn configures only its own loggers."""
    import logging

    logger = logging.getLogger("kennel.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def serve_factory():
    """The app uvicorn builds in each worker, from ``KENNEL_SERVE_*`` variables."""
    import os

    from kennel.allocator import keep_buffers_in_heap, limit_arenas
    from kennel.serve.app import ServeSettings, create_app
    from kennel.serve.protocol import HeaderTimeoutProtocol

    settings = ServeSettings()
    HeaderTimeoutProtocol.timeout_s = settings.header_timeout_s  # this process's connections
    log_serving()
    # Two malloc arenas instead of up to 8 per core for the thread pool's image buffers, and batch tensors kept in
    # the heap rather than mapped afresh for every batch: memory flat under load (benchmarks/serve_soak.py).
    limit_arenas()
    keep_buffers_in_heap()
    if settings.handlers is None:
        return create_app(os.environ["KENNEL_SERVE_ARTIFACT"], settings)
    from kennel.serve.handler_model import HandlerLoader

    first = _preloaded.pop() if _preloaded else None  # this process's, loaded by the command (one worker)
    return create_app(HandlerLoader(settings.handlers), settings, first)

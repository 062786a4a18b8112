"""The user's inference handlers, found and called as SageMaker's inference toolkit finds and calls them.

An ``inference.py`` may define ``model_fn(model_dir)``, ``input_fn(request_body, content_type)``,
``predict_fn(input_data, model)`` and ``output_fn(prediction, accept)``, or ``transform_fn(model, request_body,
content_type, accept)`` in place of the last three (defining both kinds is an error). Each may take one more
argument, the ``context``. What it leaves out is the toolkit's default (:mod:`kennel.serve.toolkit`).

The module is imported from its file with its folder at the front of ``sys.path``, so it imports its neighbours;
those already imported from that folder are imported afresh, so that a reload runs the code as it is now.

A handler's exception is the request's answer, never the server's end: a refusal the toolkit names (415 for a
content type, 406 for an accept), an exception that carries its own ``status_code`` (the toolkit's
``BaseInferenceToolkitError``), ``ValueError`` or ``TypeError`` from ``input_fn`` and Pillow's "cannot identify
image file" from any handler (400, a bad input), anything else a 500 with the exception's message.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from kennel.errors import UsageError
from kennel.serve import toolkit
from kennel.serve.inputs import InputError, media_type
from kennel.serve.served import CUSTOM_ATTRIBUTES, JSON_TYPE, accepted
from kennel.serve.toolkit import HandlerError

log = logging.getLogger("kennel.serve.app")

# Each handler's arguments without the context, and its default.
CONTRACT: dict[str, tuple[tuple[str, ...], Callable[..., Any] | None]] = {
    "model_fn": (("model_dir",), toolkit.default_model_fn),
    "input_fn": (("request_body", "content_type"), toolkit.default_input_fn),
    "predict_fn": (("input_data", "model"), toolkit.default_predict_fn),
    "output_fn": (("prediction", "accept"), toolkit.default_output_fn),
    "transform_fn": (("model", "request_body", "content_type", "accept"), None),
}


class HandlerImportError(UsageError):
    """An ``inference.py`` that cannot be imported, or whose handlers break the contract."""


class Context:
    """What a handler that takes ``context`` gets: TorchServe's context as the toolkit hands it on, as far as a
    single model and a single request need (``system_properties``, ``model_name``, ``manifest``, the request's
    headers, the answer's headers and content type)."""

    def __init__(self, model_dir: Path, model_name: str, request: Mapping[str, str] | None = None) -> None:
        import torch

        gpu = 0 if torch.cuda.is_available() else None
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu, "batch_size": 1}
        self.model_name = model_name
        self.manifest = {"model": {"modelName": model_name}}
        self.request_ids = {0: ""}
        self._request = {k.lower(): v for k, v in (request or {}).items()}
        self._response: dict[str, str] = {}
        self.response_content_type: str | None = None

    def for_request(self, headers: Mapping[str, str]) -> Context:
        """A context of its own for one request, with its headers."""
        return Context(Path(self.system_properties["model_dir"]), self.model_name, headers)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self._request.get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self._request)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self._response[key.lower()] = str(value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return dict(self._response)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_content_type = value

    def get_response_content_type(self, idx: int) -> str | None:
        return self.response_content_type

    @property
    def custom_attributes(self) -> str | None:
        """What the handler sent back in ``X-Amzn-SageMaker-Custom-Attributes``."""
        return self._response.get(CUSTOM_ATTRIBUTES.lower())


@dataclass(frozen=True)
class Handler:
    """One handler, the user's or the default, and whether it takes the context."""

    name: str
    function: Callable[..., Any]
    takes_context: bool
    origin: str  # the file it comes from, or "default"

    def __call__(self, *args: Any, context: Context) -> Any:
        return self.function(*args, context) if self.takes_context else self.function(*args)


def bind(name: str, function: Callable[..., Any], origin: str) -> Handler:
    """``function`` as handler ``name``, with or without the context as the toolkit tells them apart: by how many
    arguments it takes."""
    arguments = CONTRACT[name][0]
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return Handler(name, function, False, origin)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return Handler(name, function, True, origin)
    count = len(parameters)
    if count not in (len(arguments), len(arguments) + 1):
        raise HandlerImportError(
            f"{origin}: {name} takes {count} argument(s); the toolkit calls it with {len(arguments)} "
            f"({', '.join(arguments)}) or {len(arguments) + 1} (and context)"
        )
    return Handler(name, function, count == len(arguments) + 1, origin)


def forget_modules_under(folder: Path) -> None:
    """Drop from ``sys.modules`` what was imported from ``folder``, so that it is imported afresh."""
    inside = str(folder) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.startswith(inside):
            sys.modules.pop(name, None)


def import_entry(entry: Path) -> ModuleType:
    """The module in ``entry``, imported afresh as the toolkit imports it: by its name, its folder first on
    ``sys.path``."""
    folder = entry.parent.resolve()
    if str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))
    forget_modules_under(folder)
    spec = importlib.util.spec_from_file_location(entry.stem, entry)
    if spec is None or spec.loader is None:
        raise HandlerImportError(f"{entry}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[entry.stem] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(entry.stem, None)
        where = next((f" (line {f.lineno})" for f in reversed(_frames(exc)) if Path(f.filename) == entry), "")
        raise HandlerImportError(f"{entry}: cannot import it{where}: {type(exc).__name__}: {exc}") from None
    return module


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    if isinstance(exc, SyntaxError) and exc.filename:
        return [traceback.FrameSummary(exc.filename, exc.lineno or 0, "")]
    return list(traceback.extract_tb(exc.__traceback__))


@dataclass
class Handlers:
    """The five handlers of one ``inference.py`` (or none: every one the default), ready to call."""

    model_fn: Handler
    input_fn: Handler
    predict_fn: Handler
    output_fn: Handler
    transform_fn: Handler | None = None
    entry: Path | None = None
    stages: dict[str, str] = field(default_factory=dict)  # each handler's origin, for /model and the log

    @classmethod
    def of(cls, entry: Path | None) -> Handlers:
        """The handlers of the file ``entry`` (imported now), or the toolkit's defaults for ``None``."""
        module = import_entry(entry) if entry is not None else None
        origin = entry.name if entry is not None else "default"
        found = {name: getattr(module, name, None) for name in CONTRACT}
        found = {name: fn for name, fn in found.items() if fn is not None}
        for name, fn in found.items():
            if not callable(fn):
                raise HandlerImportError(f"{entry}: {name} is not a function")
        if "transform_fn" in found and {"input_fn", "predict_fn", "output_fn"} & found.keys():
            both = ", ".join(name for name in ("input_fn", "predict_fn", "output_fn") if name in found)
            raise HandlerImportError(
                f"{entry}: defines transform_fn and {both}; the toolkit calls one or the other, so give only one kind"
            )
        bound = {
            name: bind(name, found[name], origin) if name in found else bind(name, default, "default")
            for name, (_, default) in CONTRACT.items()
            if name in found or default is not None
        }
        stages = {name: handler.origin for name, handler in bound.items()}
        return cls(**bound, entry=entry, stages=stages)

    def transform(
        self, model: Any, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]:
        """One request through the handlers, as the toolkit's transformer runs it: a JSON or CSV body handed over
        as text, ``Accept`` ``*/*`` or none taken as the default accept; the answer as bytes and its type."""
        if not accept or accept.strip() == "*/*":
            accept = toolkit.default_accept()
        data: bytes | str = body
        if media_type(content_type) in toolkit.UTF8_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HandlerError(
                    400, "bad_input", f"a {media_type(content_type)} body must be UTF-8 ({exc})"
                ) from None
        kind = content_type or ""
        if self.transform_fn is not None:
            result = self._run(self.transform_fn, model, data, kind, accept, context=context)
        else:
            request = self._run(self.input_fn, data, kind, context=context)
            prediction = self._run(self.predict_fn, request, model, context=context)
            result = self._run(self.output_fn, prediction, accept, context=context)
        return encoded(result, context.response_content_type or first_type(accept))

    @staticmethod
    def _run(handler: Handler, *args: Any, context: Context) -> Any:
        try:
            return handler(*args, context=context)
        except Exception as exc:
            raise failure(handler, exc) from exc


def failure(handler: Handler, exc: Exception) -> InputError:
    """The answer a handler's exception gives (see the module's docstring)."""
    if isinstance(exc, InputError):  # the defaults', or kennel's own handlers served as a user's
        return exc
    status = getattr(exc, "status_code", None)
    text = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
    where = f"{handler.name} ({handler.origin})" if handler.origin != "default" else handler.name
    if isinstance(status, int) and 400 <= status <= 599:
        return HandlerError(status, "handler_error", f"{where}: {text}")
    if type(exc).__name__ == "UnsupportedFormatError" and handler.name in ("input_fn", "output_fn"):
        refused = (415, "unsupported_media_type") if handler.name == "input_fn" else (406, "not_acceptable")
        return HandlerError(*refused, f"{where}: {' '.join(text.split())}")
    if handler.name == "input_fn" and isinstance(exc, (ValueError, TypeError)):
        return HandlerError(400, "bad_input", f"{where} raised {type(exc).__name__}: {text}")
    if _unreadable_image(exc):  # the client's bytes, not the handler's fault, wherever the handler opened them
        return HandlerError(400, "bad_input", f"{where} raised {type(exc).__name__}: {text}; the body is no image")
    log.error("%s raised %s on a request", where, type(exc).__name__, exc_info=exc)
    return HandlerError(500, "handler_error", f"{where} raised {type(exc).__name__}: {text}")


def _unreadable_image(exc: BaseException) -> bool:
    """Pillow's "cannot identify image file": what ``Image.open`` raises on a body that is no image (an
    ``OSError``, which would otherwise read as the handler's own failure, a 500)."""
    from PIL import UnidentifiedImageError

    return isinstance(exc, UnidentifiedImageError)


def first_type(accept: str) -> str:
    """The answer's type when the handler does not say it: the first the client accepts, as the toolkit has it."""
    kinds = [kind for kind in accepted(accept) if "*" not in kind]
    return kinds[0] if kinds else JSON_TYPE


def encoded(result: Any, content_type: str) -> tuple[bytes, str]:
    """A handler's result as bytes and a content type: ``(body, type)``, or a body of the type given; a result
    that is no body (a dict, a list, an array) goes as JSON, as TorchServe sends it."""
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result), str(content_type)
    if isinstance(result, str):
        return result.encode("utf-8"), str(content_type)
    return toolkit.ENCODERS[JSON_TYPE](result), JSON_TYPE

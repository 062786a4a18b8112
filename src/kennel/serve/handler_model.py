"""The user's inference handlers behind the endpoint (:mod:`kennel.serve.handlers`), one request at a time per
thread as SageMaker's model server runs them: no batching, since ``predict_fn`` takes one request's input.

Before the handlers see a photo (a body whose type says image), its header is read and its pixels counted: a
decompression bomb is refused with kennel's 422, whatever ``input_fn`` would have done with it. What the image is
otherwise is the handlers' to judge.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kennel.errors import UsageError
from kennel.serve.handlers import Context, Handlers
from kennel.serve.inputs import IMAGE_TYPES, media_type, too_large
from kennel.serve.package import HandlerFiles, HandlerRef, resolve
from kennel.serve.served import CUSTOM_ATTRIBUTES, JSON_TYPE, Captured, Invocation, Reply, ServedModel
from kennel.serve.settings import ServeSettings
from kennel.serve.slot import Source

NOT_A_DOG = {"is_dog": False, "score": 0.0, "available": False}  # handlers give no dog verdict


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels``, from its header; bytes Pillow cannot read pass, for the
    handlers to judge."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            raise too_large(f"the image has more than {max_pixels:,} pixels", None) from None
        except Exception:
            return
    if width * height > max_pixels:
        limit = f"over the limit of {max_pixels:,}"
        raise too_large(f"the image is {width}x{height} ({width * height:,} pixels), {limit}", None)


LABEL_KEYS = ("label", "breed", "class", "name")  # what handlers call a class in their answers
SCORE_KEYS = ("probability", "score", "confidence")


def labelled(prediction: Any) -> dict[str, Any] | None:
    """One of a handler's predictions as ``{"label", "probability"}``, or None when it is not one."""
    if not isinstance(prediction, dict):
        return None
    label = next((prediction[k] for k in LABEL_KEYS if isinstance(prediction.get(k), str)), None)
    score = next((prediction[k] for k in SCORE_KEYS if isinstance(prediction.get(k), (int, float))), None)
    return None if label is None or score is None else {"label": label, "probability": float(score)}


def captured_answer(body: bytes, content_type: str) -> dict[str, Any]:
    """What ``--capture`` can say of a handler's answer: its predictions when it answered a JSON list of labelled
    scores (``[{"label" or "breed": ..., "probability": ...}, ...]``, alone or under ``predictions``), else none."""
    predictions: Any = []
    if media_type(content_type) == JSON_TYPE:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        predictions = answer.get("predictions") if isinstance(answer, dict) else answer
    found = [labelled(p) for p in predictions] if isinstance(predictions, list) else []
    return {"predictions": found if found and None not in found else [], "dog": NOT_A_DOG}


class HandlerModel(ServedModel):
    """What ``model_fn`` returned and the handlers that answer with it, in ``settings.handler_threads`` threads."""

    def __init__(
        self, handlers: Handlers, model: Any, files: HandlerFiles, context: Context, settings: ServeSettings
    ) -> None:
        self.handlers, self.model, self.files, self.context = handlers, model, files, context
        self.max_pixels = settings.max_pixels
        self.threads = settings.handler_threads
        self.loaded = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kennel-handler")

    async def stop(self) -> None:
        if self.pool is not None:
            await asyncio.to_thread(self.pool.shutdown, wait=True)

    async def invoke(self, invocation: Invocation) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.answer, invocation)

    def answer(self, invocation: Invocation) -> Reply:
        """One request through the handlers (in a worker thread)."""
        started = time.perf_counter()
        if media_type(invocation.content_type) in IMAGE_TYPES:
            check_pixels(invocation.body, self.max_pixels)
        headers = {"Content-Type": invocation.content_type or "", "Accept": invocation.accept or ""}
        if invocation.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES] = invocation.custom_attributes
        context = self.context.for_request(headers)
        body, content_type = self.handlers.transform(
            self.model, invocation.body, invocation.content_type, invocation.accept, context
        )
        seconds = time.perf_counter() - started
        self.observe(1, seconds)

        def capture() -> Captured:
            return Captured(captured_answer(body, content_type), None, 1000 * seconds)

        return Reply(body, content_type, capture, context.custom_attributes)

    def info(self) -> dict[str, Any]:
        files = self.files
        return {
            "kind": "inference handlers",
            "entry_point": str(files.entry) if files.entry else None,
            "model_dir": str(files.model_dir),
            "handlers": self.handlers.stages,
            "requirements": list(files.requirements),
            "model": type(self.model).__name__,
        }

    def signature(self) -> dict[str, Any]:
        return {"platform": "sagemaker_inference_handlers", "inputs": [], "outputs": []}

    def identity(self) -> dict[str, Any]:
        entry = self.files.entry.name if self.files.entry else "default"
        return {"handlers": entry, "model_dir": str(self.files.model_dir), "created": self.loaded}

    def describe(self) -> str:
        entry = f"{self.files.entry.name} handlers" if self.files.entry else "the toolkit's default handlers"
        return f"{entry}, {type(self.model).__name__} model"


class HandlerLoader:
    """The user's handlers and their model: the module imported afresh and ``model_fn`` run at each load."""

    def __init__(self, ref: HandlerRef) -> None:
        self.handler_ref = ref

    @property
    def ref(self) -> str:
        ref = self.handler_ref
        where = ref.package or ref.model_dir
        return f"{ref.entry_point} on {where}" if ref.entry_point else str(where)

    @property
    def name(self) -> str:
        return self.handler_ref.name

    def load(self, settings: ServeSettings, name: str) -> tuple[HandlerModel, Source]:
        files = resolve(self.handler_ref)
        handlers = Handlers.of(files.entry)
        context = Context(files.model_dir, name)
        try:
            model = handlers.model_fn(str(files.model_dir), context=context)
        except UsageError:  # the default model_fn's: it says what is missing already
            raise
        except Exception as exc:
            where = files.entry or "the default model_fn"
            raise UsageError(f"{where}: model_fn({files.model_dir}) raised {type(exc).__name__}: {exc}") from None
        return HandlerModel(handlers, model, files, context, settings), Source(Path(files.model_dir), name)

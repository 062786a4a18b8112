"""kennel's own artifact behind the endpoint: :class:`kennel.serve.Endpoint` (preprocessing, the dog and face
verdicts, the answer's shape) with a dynamic batcher of its own, so a batch never mixes two models' inputs."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kennel.predictor import Predictor
from kennel.serve import Endpoint, Prepared
from kennel.serve.batcher import DynamicBatcher
from kennel.serve.inputs import InputError
from kennel.serve.served import JSON_TYPE, Captured, Invocation, Reply, ServedModel, accepts_json
from kennel.serve.settings import ServeSettings
from kennel.serve.slot import Source, model_name, resolve_source


def warm_up(predictor: Predictor, batch_sizes: list[int]) -> None:
    """One model call at every batch size the batcher makes, so that the first requests do not pay for the
    runtime's first runs and memory plans (ONNX Runtime plans per input shape)."""
    import torch

    size = predictor.input_size
    for n in batch_sizes:
        predictor.predict_batch(torch.zeros(n, 3, size, size))


def to_json(answer: Any) -> bytes:
    """``answer`` as FastAPI writes JSON: UTF-8, compact, no NaN."""
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class ArtifactModel(ServedModel):
    """An artifact's :class:`Endpoint` and its batcher; photos decode in threads of their own, so that a burst of
    huge photos never holds the threads the model calls and the answers run in."""

    def __init__(self, endpoint: Endpoint, settings: ServeSettings) -> None:
        self.endpoint = endpoint
        self.batcher = DynamicBatcher(
            endpoint.predictor.predict_batch,
            settings.max_batch_size,
            settings.max_wait_ms,
            lambda size, seconds: self.observe(size, seconds),
        )
        self.decoding = ThreadPoolExecutor(max(4, 2 * settings.max_decodes), thread_name_prefix="kennel-decode")

    async def start(self) -> None:
        self.batcher.start()
        try:
            await asyncio.to_thread(warm_up, self.endpoint.predictor, self.batcher.allowed_sizes)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.batcher.stop()
        self.decoding.shutdown(wait=False, cancel_futures=True)

    async def invoke(self, invocation: Invocation) -> Reply:
        started = time.perf_counter()
        if not accepts_json(invocation.accept):
            raise InputError(406, "not_acceptable", f"accept {invocation.accept!r} is not offered; use {JSON_TYPE}")
        ep, loop = self.endpoint, asyncio.get_running_loop()
        top_k = invocation.params.get("top_k")
        prepared: Prepared = await loop.run_in_executor(
            self.decoding, ep.prepare, invocation.body, invocation.content_type, top_k
        )
        outputs = await self.batcher.submit(prepared.tensor)
        answer = await asyncio.to_thread(ep.respond, outputs, prepared, started)
        return Reply(to_json(answer), JSON_TYPE, lambda: Captured(answer, prepared.image, answer["latency_ms"]))

    def explain(self, body: bytes, content_type: str | None) -> bytes:
        return self.endpoint.explain(body, content_type)

    @property
    def depth(self) -> int:
        return self.batcher.depth

    def info(self) -> dict[str, Any]:
        return self.endpoint.model_info()

    def signature(self) -> dict[str, Any]:
        predictor = self.endpoint.predictor
        size, classes = predictor.input_size, len(predictor.class_names)
        return {
            "platform": predictor.runtime,
            "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}],
        }

    def identity(self) -> dict[str, Any]:
        info = self.endpoint.predictor.artifact.info
        return {"backbone": info.backbone, "created": info.created}

    def describe(self) -> str:
        predictor = self.endpoint.predictor
        return f"{predictor.artifact.info.backbone}, {predictor.engine.describe()}"


class ArtifactLoader:
    """An artifact folder, or a registry URI (``models:/NAME@ALIAS``) resolved to the version it names at each
    load."""

    def __init__(self, ref: Path | str) -> None:
        self.ref = str(ref)

    @property
    def name(self) -> str:
        from kennel.model_registry import is_registry_uri, parse_uri

        return parse_uri(self.ref)[0] if is_registry_uri(self.ref) else model_name(self.ref)

    def load(self, settings: ServeSettings, name: str) -> tuple[ArtifactModel, Source]:
        source = resolve_source(self.ref, name)
        options = settings.endpoint_options()
        endpoint = Endpoint.load(source.folder, settings.runtime, options, settings.precision)
        return ArtifactModel(endpoint, settings), source

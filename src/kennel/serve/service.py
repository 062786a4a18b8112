"""What the endpoint does, with the routes left out: load the model and switch to another, admit requests, answer
them from the current model, capture what it answers. The routes (:mod:`kennel.serve.routes`,
:mod:`kennel.serve.runtime_api`) stay short around it, whatever kind of model it serves.

The model loads and starts in the background once the server listens: requests that arrive before wait for it.
A request gets ``request_timeout_s`` from its first byte to its answer; at most ``max_queue`` are inside the
endpoint at once; one whose client has gone is dropped before the model sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from kennel.allocator import give_memory_back
from kennel.serve.capture import Capture
from kennel.serve.limits import Unavailable
from kennel.serve.metrics import ServeMetrics
from kennel.serve.served import Invocation, ModelLoader, Reply, ServedModel
from kennel.serve.settings import ServeSettings
from kennel.serve.slot import Loaded, ModelSlot, Source, note_deployment

log = logging.getLogger("kennel.serve.app")


class ClientGone(Exception):
    """The client closed the connection before its answer: the model never saw the request, or its answer is
    dropped."""


async def until_disconnected(request: Request) -> None:
    """Return once the client has gone. Only after the body has been read: this takes the request's messages."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Service:
    """One endpoint's model, its admission of requests, its metrics and capture."""

    def __init__(
        self, loader: ModelLoader, settings: ServeSettings, first: tuple[ServedModel, Source] | None = None
    ) -> None:
        self.loader, self.settings, self.first = loader, settings, first
        self.name = settings.model_name or loader.name
        self.in_flight = 0
        self.slot = ModelSlot()
        self.metrics = ServeMetrics(lambda: self.slot.current.model.depth if self.slot.current else 0, self._in_hand)
        self.capture = None
        if settings.capture_dir is not None:
            self.capture = Capture(settings.capture_dir, sample=settings.capture_sample, photos=settings.capture_photos)
        self._tasks: list[asyncio.Task[Any]] = []

    def _in_hand(self) -> int:
        return self.in_flight

    # --- loading and switching -------------------------------------------------------------------------------

    async def _load(self) -> tuple[ServedModel, Source]:
        first, self.first = self.first, None  # a model loaded before the server started serves first, once
        model, source = first or await asyncio.to_thread(self.loader.load, self.settings, self.name)
        model.observe = self.metrics.observe_batch
        return model, source

    async def switch(self, event: str) -> Loaded:
        """Load the model again (a registry alias: the version it names now) beside the current one, and serve
        it once it is ready; if that fails, the current one goes on and the error is raised."""
        started = time.perf_counter()
        previous = self.slot.current.source if self.slot.current is not None else None
        loaded = await self.slot.switch(self._load)
        give_memory_back()  # what loading and warming up left free, before the first requests
        source = loaded.source
        log.info(
            "%s %s%s (%s), ready in %.1f s",
            "serving" if event == "serve" else "switched to",
            source.name,
            f" version {source.version}" if source.version else f" from {source.folder}",
            loaded.model.describe(),
            time.perf_counter() - started,
        )
        if source.uri is not None:
            await asyncio.to_thread(note_deployment, source, previous)
        return loaded

    async def _first_load(self) -> None:
        try:
            await self.switch("serve")
        except Exception as exc:  # the server stays up to say so: liveness fails, and a probe restarts it
            log.exception("the model %s failed to load", self.loader.ref)
            self.slot.failed(f"the model failed to load ({type(exc).__name__}: {exc})")

    async def _follow(self) -> None:
        """Serve the version the alias names whenever it moves: one small registry query per look; the version
        is fetched and loaded only when it differs from the one serving."""
        from kennel.model_registry import alias_version, parse_uri

        name, _, alias = parse_uri(self.loader.ref)
        while True:
            await asyncio.sleep(self.settings.follow_interval_s)
            try:
                named = await asyncio.to_thread(alias_version, name, str(alias))
                if self.slot.current is not None and named != self.slot.current.source.version:
                    await self.switch("follow")
            except Exception:
                log.exception("following %s: the new version could not be served; the current one goes on", name)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.switch("reload"))
        task.add_done_callback(lambda t: t.cancelled() or (t.exception() and log.error("reload: %s", t.exception())))

    async def start(self) -> None:
        """Begin loading the model (and following its alias) in the background; SIGHUP reloads it."""
        self._tasks.append(asyncio.create_task(self._first_load(), name="kennel-load-model"))
        if self.settings.follow_alias:
            self._tasks.append(asyncio.create_task(self._follow(), name="kennel-follow-alias"))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # main thread, POSIX only
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    async def close(self) -> None:
        """Answer what is in hand, stop the model and write what the capture has queued."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.slot.close()
        if self.capture is not None:
            await asyncio.to_thread(self.capture.close)  # writes what is queued

    def readiness(self) -> tuple[bool, str | None]:
        """Whether the model can serve, and if not, why."""
        ready = self.slot.ready.is_set()
        return ready, None if ready else self.slot.error or "the model is loading"

    # --- requests --------------------------------------------------------------------------------------------

    async def admitted(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """``work`` for one prediction request: refused past ``max_queue``, a 503 past the request timeout."""
        settings = self.settings
        if self.in_flight >= settings.max_queue:
            raise Unavailable("overloaded", f"the endpoint has {settings.max_queue} requests in hand; retry shortly")
        self.in_flight += 1
        try:
            return await asyncio.wait_for(work(), settings.request_timeout_s)
        except asyncio.TimeoutError:
            limit = settings.request_timeout_s
            raise Unavailable("timeout", f"no answer within the request timeout of {limit:g} s; retry later") from None
        finally:
            self.in_flight -= 1

    async def invoke(self, request: Request, invocation: Invocation) -> Reply:
        """The answer from the model current when the request came; dropped (the model never sees it, or its
        answer is not sent) if the client goes away first."""
        async with self.slot.use() as loaded:
            answer = asyncio.ensure_future(loaded.model.invoke(invocation))
            gone = asyncio.ensure_future(until_disconnected(request))
            try:
                await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not answer.done():  # the client left, or the request timed out: the model skips it
                    answer.cancel()
            if not answer.done():
                raise ClientGone
            reply = answer.result()
            if self.capture is not None and reply.capture is not None:
                captured = reply.capture()  # never blocks: the capture's own thread writes the line
                self.capture.record(
                    captured.answer, captured.image, invocation.body, loaded.served, captured.latency_ms
                )
            return reply

    async def explain(self, body: bytes, content_type: str | None) -> bytes:
        async with self.slot.use() as loaded:
            return await asyncio.to_thread(loaded.model.explain, body, content_type)

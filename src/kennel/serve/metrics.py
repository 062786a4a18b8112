"""Prometheus metrics of one app, in a registry of its own (several apps in one process do not collide)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """Requests by route and status, errors by code, request latency, batch sizes, model time, queue depth and the
    prediction requests in hand."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, queue_depth: Callable[[], float] = lambda: 0, in_flight: Callable[[], float] = lambda: 0
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kennel_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("kennel_errors", "requests refused or failed, by error code", ["code"], registry=r)
        self.latency = Histogram(
            "kennel_request_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("kennel_batch_size", "images per model call", buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram(
            "kennel_model_seconds", "time of one model call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("kennel_queue_depth", "requests waiting for a batch", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.in_flight = Gauge("kennel_in_flight", "prediction requests in hand (at most --max-queue)", registry=r)
        self.in_flight.set_function(in_flight)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Observe:
    """ASGI middleware that counts every HTTP answer by route and status and times it."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # every other path is counted as "other", so a scan cannot make a label per path

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
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(route, status, time.perf_counter() - started)

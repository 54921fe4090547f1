"""Prometheus metrics of one app, in a registry of its own (two apps in one process, as in
the tests, never share counters)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The counters and gauges ``/metrics`` exposes."""

    def __init__(self, *, active_runs: Callable[[], int], subscribers: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tether_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("tether_http_request_seconds",
                                 "Time to the response's first byte, by route.",
                                 ["method", "route"], registry=self.registry)
        self.runs_started = Counter("tether_runs_started", "Runs created through the API.",
                                    registry=self.registry)
        Gauge("tether_runs_active", "Runs executing in this process.",
              registry=self.registry).set_function(active_runs)
        Gauge("tether_sse_subscribers", "Open event streams.",
              registry=self.registry).set_function(subscribers)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_name(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The route template (``/v1/runs/{run_id}``), so metrics do not grow with every run id."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class MetricsMiddleware:
    """Counts requests and times them to the start of the response."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_name(self.routes, scope)
        method = scope["method"]
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(method, route, str(status)).inc()

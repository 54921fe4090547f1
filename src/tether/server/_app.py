"""``create_app``: the ASGI app of one runtime, with no globals (two apps, two registries).

The app does not own the runtime: whoever opens the runtime (``tether serve``, a test) runs
the app inside it. The app's lifespan runs the event hub that feeds the SSE streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tether.errors import ConfigError, StoreError
from tether.governance import APIKeys, Governance
from tether.runtime import Agent, Runtime
from tether.server import _routes_governance as gov
from tether.server import _routes_runs as runs
from tether.server._auth import Caller, Gate
from tether.server._console import console_routes
from tether.server._errors import EXCEPTION_HANDLERS, error_response
from tether.server._metrics import Metrics, MetricsMiddleware
from tether.server._openapi import openapi_document
from tether.server._state import AppState, caller_of, state_of
from tether.server._stream import EventHub


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerOptions:
    """How the app authenticates and what it serves."""

    api_keys: APIKeys | None = None
    """Keys that stand for principals; required unless ``insecure_no_auth``."""
    governance: Governance | None = None
    """Policies for ``read_run``/``cancel_run``, approvals and the audit trail."""
    agents: Sequence[Agent] = ()
    """The agents callers may start, by name."""
    insecure_no_auth: bool = False
    """Every request acts as the runtime's principal and tenant: local trials only."""
    poll_interval_seconds: float = 0.25
    """How often a watched run is read again (bounds SSE delay for other workers' runs)."""
    keepalive_seconds: float = 15.0
    """An idle event stream sends a comment this often, so proxies keep it open."""
    extra_routes: Sequence[BaseRoute] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.api_keys is None and not self.insecure_no_auth:
            raise ConfigError("the server needs API keys (configure [governance] or give "
                              "--api-keys FILE), or --insecure-no-auth for a local trial")
        if self.poll_interval_seconds <= 0 or self.keepalive_seconds <= 0:
            raise ConfigError("poll_interval_seconds and keepalive_seconds must be positive")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def whoami(request: Request) -> Response:
    """Who the key stands for (``tether runs ls --server`` names the principal)."""
    _, caller = caller_of(request)
    return JSONResponse({"principal": caller.principal, "tenant": caller.tenant})


async def readyz(request: Request) -> Response:
    try:
        with anyio.fail_after(5):
            await state_of(request).runtime.store.list_runs(limit=1)
    except (StoreError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, StoreError) else "no answer within 5 s"
        return error_response(503, StoreError.code, f"the store is not ready: {message}")
    return JSONResponse({"status": "ready"})


def create_app(runtime: Runtime, options: ServerOptions) -> Starlette:
    """The HTTP API, ``/metrics`` and the web console over ``runtime`` (already open)."""
    settings = runtime.settings
    insecure = Caller(settings.principal, settings.tenant) if options.insecure_no_auth else None
    hub = EventHub(runtime, poll_interval_seconds=options.poll_interval_seconds)
    metrics = Metrics(active_runs=lambda: runtime.active_runs,
                      subscribers=lambda: hub.subscribers)
    gate = Gate(options.api_keys, options.governance, runtime.store, insecure)
    state = AppState(runtime=runtime, gate=gate, hub=hub, metrics=metrics,
                     agents={a.name: a for a in options.agents},
                     governance=options.governance, keepalive_seconds=options.keepalive_seconds)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def metrics_route(request: Request) -> Response:
        return metrics.response()

    routes: list[BaseRoute] = [
        Route("/v1/whoami", whoami, methods=["GET"]),
        Route("/v1/agents", runs.list_agents, methods=["GET"]),
        Route("/v1/runs", runs.start_run, methods=["POST"]),
        Route("/v1/runs", runs.list_runs, methods=["GET"]),
        Route("/v1/runs/cancel", runs.cancel_all, methods=["POST"]),
        Route("/v1/runs/{run_id}", runs.get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}/journal", runs.run_journal, methods=["GET"]),
        Route("/v1/runs/{run_id}/cancel", runs.cancel_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/signals", runs.signal_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/resolve", runs.resolve_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/events", runs.run_events, methods=["GET"]),
        Route("/v1/approvals", gov.list_approvals, methods=["GET"]),
        Route("/v1/approvals/{approval_id}", gov.get_approval, methods=["GET"]),
        Route("/v1/approvals/{approval_id}/decision", gov.decide_approval, methods=["POST"]),
        Route("/v1/audit", gov.audit_records, methods=["GET"]),
        Route("/v1/audit/verify", gov.audit_verify, methods=["GET"]),
        Route("/v1/spend", gov.spend, methods=["GET"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        *console_routes(),
        *options.extra_routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            await group.start(hub.run)
            yield
            group.cancel_scope.cancel()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers=EXCEPTION_HANDLERS)
    app.state.tether = state
    app.user_middleware.insert(0, Middleware(MetricsMiddleware, metrics=metrics,
                                             routes=routes))
    return app


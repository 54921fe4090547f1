"""What every route needs, built once by ``create_app`` and reached via ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from tether.governance import Governance
from tether.runtime import Agent, Runtime
from tether.server._auth import Caller, Gate
from tether.server._metrics import Metrics
from tether.server._stream import EventHub


@dataclass(frozen=True, slots=True)
class AppState:
    runtime: Runtime
    gate: Gate
    hub: EventHub
    metrics: Metrics
    agents: dict[str, Agent]
    """The agents callers may start, by name; nothing else is ever imported for a caller."""
    governance: Governance | None
    keepalive_seconds: float


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.tether
    return state


def caller_of(request: Request) -> tuple[AppState, Caller]:
    """The app's state and the authenticated caller (``Unauthenticated`` otherwise)."""
    state = state_of(request)
    return state, state.gate.caller(request)

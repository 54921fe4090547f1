"""``/v1/runs``: start, list, read, cancel, signal and resolve runs, stream their events, and
the kill switch (cancel every live run of the caller's tenant)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import pydantic
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tether.errors import AgentNotFound, PolicyDenied, RunConflict, RunNotFound, UsageError
from tether.governance import cancel_runs, live_runs
from tether.server._state import AppState, caller_of
from tether.server._stream import end_id, event_stream
from tether.types import JSONObject, Run, RunStatus

MAX_PAGE = 200


class _Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class StartRun(_Body):
    agent: str = pydantic.Field(min_length=1)
    input: JSONObject = pydantic.Field(default_factory=dict)
    run_id: str | None = pydantic.Field(default=None, min_length=1, max_length=200,
                                        pattern=r"^[A-Za-z0-9._:-]+$")
    thread_id: str | None = pydantic.Field(default=None, min_length=1, max_length=200)


class CancelRun(_Body):
    reason: str = pydantic.Field(default="cancelled over the HTTP API", max_length=2000)


class CancelRuns(_Body):
    agent: str | None = pydantic.Field(default=None, min_length=1, max_length=200)
    reason: str = pydantic.Field(default="cancelled over the HTTP API", max_length=2000)


class SendSignal(_Body):
    name: str = pydantic.Field(min_length=1, max_length=200)
    data: Any = None  # any JSON (the recursive JSON alias is too deep for pydantic)


class ResolveRun(_Body):
    action: Literal["retry", "skip", "fail"]
    value: Any = None  # with skip: the uncertain effect's result, any JSON


async def body(request: Request, model: type[_Body]) -> _Body:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"the request body is not valid JSON ({exc.msg} at position "
                         f"{exc.pos})") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return model.model_validate(data)


async def load_run(state: AppState, request: Request, action: str = "read_run") -> Run:
    _, caller = caller_of(request)
    run = await state.runtime.store.get_run(request.path_params["run_id"])
    if run is None:
        raise RunNotFound(request.path_params["run_id"])
    return state.gate.check_run(caller, run, action)


async def list_agents(request: Request) -> Response:
    state, _ = caller_of(request)
    return JSONResponse({"agents": [{"name": a.name, "version": a.version}
                                    for a in sorted(state.agents.values(), key=lambda a: a.name)]})


async def start_run(request: Request) -> Response:
    state, caller = caller_of(request)
    spec = await body(request, StartRun)
    assert isinstance(spec, StartRun)
    agent = state.agents.get(spec.agent)
    if agent is None:
        known = ", ".join(sorted(state.agents)) or "none"
        raise AgentNotFound(f"no agent {spec.agent!r} is served here (served: {known}); "
                            "`tether serve --agent MODULE:AGENT` adds one")
    existing = None
    if spec.run_id is not None:
        existing = await state.runtime.store.get_run(spec.run_id)
        _same_owner(existing, caller.tenant)
    try:
        handle = await state.runtime.start(agent, spec.input, run_id=spec.run_id,
                                           thread_id=spec.thread_id, tenant=caller.tenant,
                                           principal=caller.principal)
    except RunConflict as exc:
        # The runtime's message quotes the stored input: only for the run's own tenant.
        _same_owner(await state.runtime.store.get_run(exc.run_id), caller.tenant)
        raise
    run = await handle.status()
    _same_owner(run, caller.tenant)
    if existing is None:
        state.metrics.runs_started.inc()
    return JSONResponse(run.to_json(), status_code=200 if existing is not None else 201,
                        headers={"Location": f"/v1/runs/{run.run_id}"})


def _same_owner(run: Run | None, tenant: str) -> None:
    if run is not None and run.tenant != tenant:
        raise RunConflict(run.run_id, "another owner; its data is not shown")


def encode_cursor(run: Run) -> str:
    raw = json.dumps([run.created_at_ms, run.run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        created, run_id = value
        if isinstance(created, int) and isinstance(run_id, str):
            return created, run_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise UsageError("cursor is not one this server issued: pass next_cursor unchanged")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, not {value}")
    return value


async def list_runs(request: Request) -> Response:
    state, caller = caller_of(request)
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in RunStatus.__members__.values():
        raise UsageError(f"status must be one of {', '.join(RunStatus)}, not {status!r}")
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    cursor = params.get("cursor")
    page = await state.runtime.store.list_runs(
        status=RunStatus(status) if status else None, agent=params.get("agent") or None,
        tenant=caller.tenant, limit=limit, before=decode_cursor(cursor) if cursor else None)
    visible = [run for run in page if state.gate.may_read(caller, run)]
    # How many of the page the policies hid, as `tether runs ls` says: the caller learns
    # that runs of its own tenant exist, never what they are.
    return JSONResponse({"runs": [run.to_json() for run in visible],
                         "hidden": len(page) - len(visible),
                         "next_cursor": encode_cursor(page[-1]) if len(page) == limit else None})


async def get_run(request: Request) -> Response:
    state, _ = caller_of(request)
    return JSONResponse((await load_run(state, request)).to_json())


async def run_journal(request: Request) -> Response:
    state, _ = caller_of(request)
    run = await load_run(state, request)
    records = await state.runtime.store.load_journal(run.run_id)
    return JSONResponse({"run_id": run.run_id, "records": [r.to_json() for r in records]})


async def cancel_run(request: Request) -> Response:
    state, caller = caller_of(request)
    run = await load_run(state, request, "cancel_run")
    spec = await body(request, CancelRun)
    assert isinstance(spec, CancelRun)
    return JSONResponse((await state.runtime.cancel(run.run_id, reason=spec.reason,
                                                    by=caller.principal)).to_json())


async def cancel_all(request: Request) -> Response:
    """The kill switch: cancel every run of the caller's tenant (of ``agent``) that has not
    ended and that the caller may ``cancel_run``; those the policies refuse are counted."""
    state, caller = caller_of(request)
    spec = await body(request, CancelRuns)
    assert isinstance(spec, CancelRuns)
    allowed: list[Run] = []
    refused = 0
    for run in await live_runs(state.runtime, tenant=caller.tenant, agent=spec.agent):
        try:
            allowed.append(state.gate.check_run(caller, run, "cancel_run"))
        except PolicyDenied:
            refused += 1
    audit = None if state.governance is None else state.governance.audit
    cancelled = await cancel_runs(state.runtime, allowed, by=caller.principal,
                                  reason=spec.reason, audit=audit)
    return JSONResponse({"cancelled": [run.to_json() for run in cancelled], "refused": refused})


async def resolve_run(request: Request) -> Response:
    state, _ = caller_of(request)
    run = await load_run(state, request, "resolve_run")
    spec = await body(request, ResolveRun)
    assert isinstance(spec, ResolveRun)
    return JSONResponse((await state.runtime.resolve(run.run_id, spec.action,
                                                     spec.value)).to_json())


async def signal_run(request: Request) -> Response:
    state, _ = caller_of(request)
    run = await load_run(state, request, "signal_run")
    spec = await body(request, SendSignal)
    assert isinstance(spec, SendSignal)
    return JSONResponse((await state.runtime.signal(run.run_id, spec.name, spec.data)).to_json())


async def run_events(request: Request) -> Response:
    state, _ = caller_of(request)
    run = await load_run(state, request)
    text = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = int(text)
    except ValueError:
        raise UsageError(f"Last-Event-ID (or after) must be an event id, not {text!r}") from None
    if run.status.is_terminal:
        records = await state.runtime.store.load_journal(run.run_id)
        if after >= end_id(records):
            return Response(status_code=204)  # seen it all: a browser stops reconnecting

    async def stream() -> object:
        async with state.hub.watch(run) as (feed, listener):
            async for chunk in event_stream(feed, listener, after,
                                            keepalive_seconds=state.keepalive_seconds):
                yield chunk

    return StreamingResponse(stream(), media_type="text/event-stream",  # type: ignore[arg-type]
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

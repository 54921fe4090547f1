"""``Client`` and ``AsyncClient``: the HTTP API from Python (httpx).

Both raise the same Tether errors the server reports (``RunNotFound``, ``RunConflict``,
``PolicyDenied``, ...; ``TetherError`` for a code this version does not know), so code written
against a local ``Runtime`` handles a remote one the same way. ``events`` follows a run's
stream and, when the connection drops, reconnects after the last durable event it saw, so
the caller gets every record exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx

from tether import errors
from tether.client._sse import ServerEvent, aparse_lines, parse_lines
from tether.types import JSON, JSONObject

_ERRORS: dict[str, type[errors.TetherError]] = {
    cls.code: cls for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.TetherError)}
"""Every error class by its code (codes are unique across the tree)."""

RECONNECT_ATTEMPTS = 5


def error_from_response(response: httpx.Response) -> errors.TetherError:
    """The Tether error an error response stands for, with the server's message (its
    structured fields stay on the server; ``TetherError`` for a code this version lacks)."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "internal", f"HTTP {response.status_code}: {response.text[:200]}"
    cls = _ERRORS.get(code, errors.TetherError)
    # Built without the class's own constructor: those take structured fields, and the
    # wire carries only the message.
    exc = cls.__new__(cls)
    errors.TetherError.__init__(exc, message if cls.code == code else f"{code}: {message}")
    return exc


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response)
    return None if response.status_code == 204 else response.json()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _start_body(agent: str, input: JSONObject | None, run_id: str | None,
                thread_id: str | None) -> JSONObject:
    body: JSONObject = {"agent": agent, "input": input or {}}
    if run_id is not None:
        body["run_id"] = run_id
    if thread_id is not None:
        body["thread_id"] = thread_id
    return body


def _cancel_all_body(agent: str | None, reason: str) -> JSONObject:
    body: JSONObject = {"reason": reason}
    if agent is not None:
        body["agent"] = agent
    return body


def _list_params(status: str | None, agent: str | None, limit: int,
                 cursor: str | None) -> dict[str, str | int]:
    given = {"status": status, "agent": agent, "cursor": cursor}
    return {"limit": limit, **{name: value for name, value in given.items() if value is not None}}


class Client:
    """A blocking client of one Tether server.

    Args:
        base_url: the server (``http://127.0.0.1:8000``).
        api_key: a ``tk_...`` key (default: none, for a server run with ``--insecure-no-auth``).
        timeout: seconds per request (event streams wait as long as they need).
        transport: an httpx transport (tests pass one over the app itself).
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key),
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, agent: str, input: JSONObject | None = None, *, run_id: str | None = None,
              thread_id: str | None = None) -> JSONObject:
        """Start a run (the same ``run_id`` and input return the same run)."""
        result: JSONObject = _checked(self._http.post(
            "/v1/runs", json=_start_body(agent, input, run_id, thread_id)))
        return result

    def get(self, run_id: str) -> JSONObject:
        result: JSONObject = _checked(self._http.get(f"/v1/runs/{run_id}"))
        return result

    def list_runs(self, *, status: str | None = None, agent: str | None = None, limit: int = 50,
             cursor: str | None = None) -> JSONObject:
        """One page: ``{"runs": [...], "next_cursor": ...}``."""
        result: JSONObject = _checked(self._http.get(
            "/v1/runs", params=_list_params(status, agent, limit, cursor)))
        return result

    def journal(self, run_id: str) -> list[JSONObject]:
        records: list[JSONObject] = _checked(self._http.get(f"/v1/runs/{run_id}/journal"))["records"]
        return records

    def cancel(self, run_id: str, *, reason: str = "cancelled over the HTTP API") -> JSONObject:
        result: JSONObject = _checked(self._http.post(f"/v1/runs/{run_id}/cancel",
                                                      json={"reason": reason}))
        return result

    def signal(self, run_id: str, name: str, data: JSON = None) -> JSONObject:
        result: JSONObject = _checked(self._http.post(f"/v1/runs/{run_id}/signals",
                                                      json={"name": name, "data": data}))
        return result

    def cancel_all(self, *, agent: str | None = None,
                   reason: str = "cancelled over the HTTP API") -> JSONObject:
        """The kill switch: cancel every live run of the key's tenant (of ``agent``) that the
        key's principal may cancel: ``{"cancelled": [...], "refused": n}``."""
        result: JSONObject = _checked(self._http.post("/v1/runs/cancel",
                                                      json=_cancel_all_body(agent, reason)))
        return result

    def resolve(self, run_id: str, action: str, value: JSON = None) -> JSONObject:
        """Settle a run in needs_attention: ``retry``, ``skip`` (``value`` is the result) or
        ``fail``."""
        result: JSONObject = _checked(self._http.post(f"/v1/runs/{run_id}/resolve",
                                                      json={"action": action, "value": value}))
        return result

    def whoami(self) -> JSONObject:
        """``{"principal": ..., "tenant": ...}`` of the key."""
        result: JSONObject = _checked(self._http.get("/v1/whoami"))
        return result

    def audit_verify(self) -> JSONObject:
        """The key's tenant's audit chain checked against the signed checkpoints."""
        result: JSONObject = _checked(self._http.get("/v1/audit/verify"))
        return result

    def spend(self) -> JSONObject:
        """The tenant's spend (``source`` says whether from the budget ledger or journals)."""
        result: JSONObject = _checked(self._http.get("/v1/spend"))
        return result

    def approvals(self, *, status: str = "pending", limit: int = 100) -> list[JSONObject]:
        items: list[JSONObject] = _checked(self._http.get(
            "/v1/approvals", params={"status": status, "limit": limit}))["approvals"]
        return items

    def decide(self, approval_id: str, *, approve: bool, reason: str) -> JSONObject:
        result: JSONObject = _checked(self._http.post(
            f"/v1/approvals/{approval_id}/decision", json={"approve": approve, "reason": reason}))
        return result

    def events(self, run_id: str, *, after: int = 0) -> Iterator[ServerEvent]:
        """The run's events until it ends, reconnecting after a dropped connection."""
        failures = 0
        while True:
            try:
                with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                       headers={"Last-Event-ID": str(after)},
                                       timeout=httpx.Timeout(self._http.timeout.connect,
                                                             read=None)) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    for event in parse_lines(response.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            after = event.id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise


class AsyncClient:
    """The same as ``Client``, for async code."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key),
                                       timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, agent: str, input: JSONObject | None = None, *,
                    run_id: str | None = None, thread_id: str | None = None) -> JSONObject:
        result: JSONObject = _checked(await self._http.post(
            "/v1/runs", json=_start_body(agent, input, run_id, thread_id)))
        return result

    async def get(self, run_id: str) -> JSONObject:
        result: JSONObject = _checked(await self._http.get(f"/v1/runs/{run_id}"))
        return result

    async def list_runs(self, *, status: str | None = None, agent: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> JSONObject:
        result: JSONObject = _checked(await self._http.get(
            "/v1/runs", params=_list_params(status, agent, limit, cursor)))
        return result

    async def journal(self, run_id: str) -> list[JSONObject]:
        records: list[JSONObject] = _checked(
            await self._http.get(f"/v1/runs/{run_id}/journal"))["records"]
        return records

    async def cancel(self, run_id: str, *, reason: str = "cancelled over the HTTP API",
                     ) -> JSONObject:
        result: JSONObject = _checked(await self._http.post(f"/v1/runs/{run_id}/cancel",
                                                            json={"reason": reason}))
        return result

    async def signal(self, run_id: str, name: str, data: JSON = None) -> JSONObject:
        result: JSONObject = _checked(await self._http.post(
            f"/v1/runs/{run_id}/signals", json={"name": name, "data": data}))
        return result

    async def cancel_all(self, *, agent: str | None = None,
                         reason: str = "cancelled over the HTTP API") -> JSONObject:
        result: JSONObject = _checked(await self._http.post(
            "/v1/runs/cancel", json=_cancel_all_body(agent, reason)))
        return result

    async def resolve(self, run_id: str, action: str, value: JSON = None) -> JSONObject:
        result: JSONObject = _checked(await self._http.post(
            f"/v1/runs/{run_id}/resolve", json={"action": action, "value": value}))
        return result

    async def whoami(self) -> JSONObject:
        result: JSONObject = _checked(await self._http.get("/v1/whoami"))
        return result

    async def audit_verify(self) -> JSONObject:
        result: JSONObject = _checked(await self._http.get("/v1/audit/verify"))
        return result

    async def spend(self) -> JSONObject:
        result: JSONObject = _checked(await self._http.get("/v1/spend"))
        return result

    async def approvals(self, *, status: str = "pending", limit: int = 100) -> list[JSONObject]:
        items: list[JSONObject] = _checked(await self._http.get(
            "/v1/approvals", params={"status": status, "limit": limit}))["approvals"]
        return items

    async def decide(self, approval_id: str, *, approve: bool, reason: str) -> JSONObject:
        result: JSONObject = _checked(await self._http.post(
            f"/v1/approvals/{approval_id}/decision", json={"approve": approve, "reason": reason}))
        return result

    async def events(self, run_id: str, *, after: int = 0) -> AsyncIterator[ServerEvent]:
        """The run's events until it ends, reconnecting after a dropped connection."""
        failures = 0
        while True:
            try:
                async with self._http.stream(
                        "GET", f"/v1/runs/{run_id}/events",
                        headers={"Last-Event-ID": str(after)},
                        timeout=httpx.Timeout(self._http.timeout.connect, read=None)) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    async for event in aparse_lines(response.aiter_lines()):
                        failures = 0
                        if event.id is not None:
                            after = event.id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise
                await anyio.sleep(0.2 * failures)

"""Run events as server-sent events: every durable event exactly once, across drops."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from tether.client import ServerEvent
from tether.client._sse import aparse_lines

from .server_support import over_loopback, serve_in_process

pytestmark = pytest.mark.anyio


async def read_events(client: httpx.AsyncClient, run_id: str, *, after: int | None = None,
                      stop_after_records: int | None = None,
                      into: list[ServerEvent] | None = None) -> list[ServerEvent]:
    """Events of one connection, until ``end`` or until it is dropped after N records."""
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    seen: list[ServerEvent] = [] if into is None else into
    async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        if response.status_code == 204:
            return seen
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in aparse_lines(response.aiter_lines()):
            seen.append(event)
            records = sum(1 for e in seen if e.event == "record")
            if event.event == "end" or records == stop_after_records:
                break  # leaving the block drops the connection
    return seen


async def test_a_stream_sends_each_record_once_then_the_end(db_url: str, tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served, over_loopback(served) as client:
        await client.post("/v1/runs", json={"agent": "stepper", "run_id": "s",
                                            "input": {"steps": 6, "pause": 0.02}})
        events = await read_events(client, "s")
        records = [e for e in events if e.event == "record"]
        assert [e.id for e in records] == [1, 2, 3, 4, 5, 6]
        assert [e.data["name"] for e in records] == [f"step-{i}" for i in range(6)]
        assert events[-1].event == "end"
        assert events[-1].id == 7
        assert events[-1].data == {"status": "completed"}
        states = [e.data["run"]["status"] for e in events if e.event == "run"]
        assert states[-1] == "completed"
        # Everything seen: a reconnect is told there is nothing more.
        gone = await client.get("/v1/runs/s/events", headers={"Last-Event-ID": "7"})
        assert gone.status_code == 204


async def test_resuming_after_dropped_connections_loses_and_repeats_nothing(
        db_url: str, tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served, over_loopback(served) as client:
        await client.post("/v1/runs", json={"agent": "stepper", "run_id": "long",
                                            "input": {"steps": 24, "pause": 0.01}})
        durable: list[ServerEvent] = []
        last: int | None = None
        for _ in range(100):
            events = await read_events(client, "long", after=last, stop_after_records=5)
            durable += [e for e in events if e.id is not None]
            if durable:
                last = durable[-1].id
            if events and events[-1].event == "end":
                break
        ids = [e.id for e in durable]
        assert ids == list(range(1, 26)), ids  # 24 records and the end, each once
        journal = (await client.get("/v1/runs/long/journal")).json()["records"]
        assert [e.data for e in durable[:-1]] == journal


async def test_live_events_carry_token_deltas(sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served, over_loopback(served) as client:
        await client.post("/v1/runs", json={"agent": "patient", "run_id": "p"})
        await served.runtime.handle("p").settled()
        events: list[ServerEvent] = []

        async def follow() -> None:
            await read_events(client, "p", into=events)

        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            with anyio.fail_after(10):
                while not events:  # the stream is open once its first state arrived
                    await anyio.sleep(0.01)
            await client.post("/v1/runs/p/signals", json={"name": "go"})
        live = [e.data for e in events if e.event == "live"]
        deltas = [e["data"]["text"] for e in live if e["type"] == "llm.delta"]
        assert "".join(deltas) == "Hello from the model"
        assert [e.data["kind"] for e in events if e.event == "record"] == ["wait", "llm"]
        assert events[-1].event == "end"


async def test_a_run_executed_by_another_process_streams_from_the_store(
        sqlite_url: str, tmp_path: Path) -> None:
    """The server's runtime does not execute it: a second runtime (another worker) does."""
    import tether
    from tether.config import Settings

    from .server_agents import AGENTS

    async with serve_in_process(sqlite_url, tmp_path) as served, over_loopback(served) as client:
        settings = Settings(db=sqlite_url, poll_interval_seconds=0.05, flush_interval_ms=5)
        async with tether.Runtime(settings=settings, agents=AGENTS, worker=False) as other:
            await other.start("stepper", {"steps": 5, "pause": 0.02}, run_id="elsewhere",
                              tenant="acme", principal="alice")
            events = await read_events(client, "elsewhere")
        assert [e.id for e in events if e.id is not None] == [1, 2, 3, 4, 5, 6]
        assert not [e for e in events if e.event == "live"]  # no bus events from elsewhere

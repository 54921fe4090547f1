"""A run's events as server-sent events, resumable with ``Last-Event-ID``.

What a client is guaranteed (``GET /v1/runs/{id}/events``):

* **Durable events** are the run's journal records, read from the store, so they are the same
  whichever process executes the run. Each is sent as ``event: record`` with ``id: <seq>``
  once it is final, and only when every record before it is final too (a call that finishes
  before an earlier one is held back until that one ends): ids only increase. When the run
  completes, fails or is cancelled, the records left unfinished follow, then
  ``event: end`` with the id after the last record. Reconnecting with ``Last-Event-ID: N``
  (or ``?after=N``) sends exactly the durable events after ``N``: none lost, none repeated.
  A reconnect after ``end`` gets ``204 No Content``, which tells a browser to stop.
* **State** (``event: run``, no id) is the run as the store holds it plus its unfinished
  records (a tool call in flight, with its arguments): sent on connecting and whenever it
  changes. It is a state, not a log: a status held only between two reads may go unseen.
* **Live events** (``event: live``, no id) are what this process's event bus says about runs
  it executes: token deltas (``llm.delta``), tool progress, retries, timings. Best effort: a
  slow client may miss some, they are never replayed, and runs executed by another worker
  have none (their durable events still arrive, within one poll interval).

One poller per watched run serves every subscriber of that run (fan-out costs one store read
per change, not one per subscriber); the local event bus wakes it as soon as something
happens here, and ``poll_interval_seconds`` bounds the delay for other workers' runs.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import anyio.abc

from tether.runtime import Event, Runtime
from tether.store import Record, RecordState
from tether.types import JSONObject, Run

LIVE_BUFFER = 1000
"""Live events held per slow subscriber; older ones are dropped first."""


class _Listener:
    """One subscriber's wake-up call and its queue of live events."""

    def __init__(self) -> None:
        self.dirty = True  # Invariant: set whenever the feed changed since the last look.
        self.live: collections.deque[Event] = collections.deque(maxlen=LIVE_BUFFER)
        self._wake = anyio.Event()

    def notify(self) -> None:
        self.dirty = True
        self._wake.set()

    def offer(self, event: Event) -> None:
        self.live.append(event)
        self._wake.set()

    async def wait(self, timeout_seconds: float) -> bool:
        """Until notified or offered an event (True), or the timeout (False)."""
        with anyio.move_on_after(timeout_seconds):
            await self._wake.wait()
        woken = self._wake.is_set()
        # Replaced before the caller looks at dirty/live: a notify from now on sets the new one.
        self._wake = anyio.Event()
        return woken


@dataclass(eq=False)
class Feed:
    """The latest state of one run, shared by everyone watching it."""

    run_id: str
    run: Run | None = None
    records: list[Record] = field(default_factory=list)
    listeners: set[_Listener] = field(default_factory=set)
    refs: int = 0
    kick: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def update(self, run: Run, records: list[Record]) -> None:
        if run == self.run and records == self.records:
            return
        self.run, self.records = run, records
        for listener in self.listeners:
            listener.notify()


class EventHub:
    """Watches runs for SSE subscribers. Start it with ``run`` in a task group."""

    def __init__(self, runtime: Runtime, *, poll_interval_seconds: float) -> None:
        self._runtime = runtime
        self._poll = poll_interval_seconds
        self._feeds: dict[str, Feed] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._pump_scope: anyio.CancelScope | None = None

    @property
    def subscribers(self) -> int:
        return sum(len(feed.listeners) for feed in self._feeds.values())

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            task_status.started()
            await anyio.sleep_forever()

    @contextlib.asynccontextmanager
    async def watch(self, run: Run) -> AsyncIterator[tuple[Feed, _Listener]]:
        """Subscribe to a run (already authorized) for as long as the block lasts."""
        assert self._group is not None, "EventHub.run is not running"
        feed = self._feeds.get(run.run_id)
        if feed is None:
            feed = self._feeds[run.run_id] = Feed(run.run_id)
            feed.update(run, await self._runtime.store.load_journal(run.run_id))
            self._group.start_soon(self._poller, feed)
            if self._pump_scope is None:
                self._pump_scope = anyio.CancelScope()
                self._group.start_soon(self._pump, self._pump_scope)
        listener = _Listener()
        feed.refs += 1
        feed.listeners.add(listener)
        try:
            yield feed, listener
        finally:
            feed.listeners.discard(listener)
            feed.refs -= 1
            if feed.refs == 0:
                feed.scope.cancel()
                del self._feeds[feed.run_id]
                if not self._feeds and self._pump_scope is not None:
                    self._pump_scope.cancel()
                    self._pump_scope = None

    async def _poller(self, feed: Feed) -> None:
        store = self._runtime.store
        with feed.scope:
            while feed.run is not None and not feed.run.status.is_terminal:
                with anyio.move_on_after(self._poll):
                    await feed.kick.wait()
                feed.kick = anyio.Event()
                run = await store.get_run(feed.run_id)
                if run is not None:
                    feed.update(run, await store.load_journal(feed.run_id))

    async def _pump(self, scope: anyio.CancelScope) -> None:
        """Carry this process's bus events to the feeds: live ones to subscribers, and a
        kick to the poller, so a local run's changes show without waiting for a poll."""
        with scope:
            while True:
                async with self._runtime.events.subscribe(max_buffer=100_000) as events:
                    async for event in events:
                        feed = self._feeds.get(event.run_id)
                        if feed is None:
                            continue
                        feed.kick.set()
                        for listener in feed.listeners:
                            listener.offer(event)
                # Dropped for falling behind: subscribe again (the pollers cover the gap).


def _sse(event: str, data: JSONObject, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def end_id(records: list[Record]) -> int:
    """The id of a finished run's ``end`` event: one past its last record."""
    return (records[-1].seq if records else 0) + 1


async def event_stream(feed: Feed, listener: _Listener, after: int, *,
                       keepalive_seconds: float) -> AsyncIterator[str]:
    """The SSE text for one subscriber, from durable position ``after`` on."""
    yield "retry: 1000\n\n"
    cursor = after
    shown: JSONObject | None = None
    while True:
        if listener.dirty:
            listener.dirty = False
            run, records = feed.run, feed.records
            assert run is not None
            finished = run.status.is_terminal
            for record in records:
                if record.seq <= cursor:
                    continue
                if record.state == RecordState.STARTED and not finished:
                    break  # head of line: later records wait for this one
                yield _sse("record", record.to_json(), record.seq)
                cursor = record.seq
            state: JSONObject = {
                "run": run.to_json(),
                "in_flight": [r.to_json() for r in records if r.seq > cursor]}
            if state != shown:
                shown = state
                yield _sse("run", state)
            if finished:
                yield _sse("end", {"status": str(run.status)}, end_id(records))
                return
        while listener.live:
            yield _sse("live", listener.live.popleft().to_json())
        if not listener.dirty and not await listener.wait(keepalive_seconds):
            yield ": keepalive\n\n"

"""The in-process event bus: what happens in runs, as it happens.

Publishing costs nothing when nobody listens (the common case on the hot path). A subscriber
that falls ``max_buffer`` events behind is closed (its iteration ends) rather than slowing
every run down to its pace.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tether._clock import Clock
from tether.types import JSONObject


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in a run. ``id`` increases across the whole bus."""

    id: int
    run_id: str
    type: str
    at_ms: int
    data: JSONObject = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        """The event as a JSON object (what the HTTP stream sends)."""
        return {"id": self.id, "run_id": self.run_id, "type": self.type, "at_ms": self.at_ms,
                "data": self.data}


class Subscription:
    """An async iterator of events; use as an async context manager to close it."""

    def __init__(self, bus: EventBus, run_id: str | None, max_buffer: int) -> None:
        self.run_id = run_id
        self._bus = bus
        send, receive = anyio.create_memory_object_stream[Event](max_buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive

    def _offer(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.close()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.close()

    def close(self) -> None:
        self._bus._subscribers.discard(self)
        self._send.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        self._receive.close()


class EventBus:
    """Fan-out of run events to in-process subscribers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._subscribers: set[Subscription] = set()
        self._next_id = 0

    @property
    def active(self) -> bool:
        """Whether anyone listens (so callers can skip building event data)."""
        return bool(self._subscribers)

    def publish(self, run_id: str, type: str, data: JSONObject | None = None) -> None:
        if not self._subscribers:
            return
        self._next_id += 1
        event = Event(self._next_id, run_id, type, self._clock.now_ms(), data or {})
        for subscriber in list(self._subscribers):
            if subscriber.run_id is None or subscriber.run_id == run_id:
                subscriber._offer(event)

    def subscribe(self, run_id: str | None = None, *, max_buffer: int = 10_000) -> Subscription:
        """Events of one run (or of all runs) from now on."""
        subscription = Subscription(self, run_id, max_buffer if max_buffer > 0 else math.inf)  # type: ignore[arg-type]
        self._subscribers.add(subscription)
        return subscription

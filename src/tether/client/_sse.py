"""Reading server-sent events from a byte stream (the parts of the format Tether sends)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One event of a run's stream: ``record``, ``run``, ``live`` or ``end``. ``id`` is set on
    durable events only (records and the end), and is what resuming continues after."""

    event: str
    data: Any
    id: int | None = None


class SSEParser:
    """Feed lines, get events (blank line ends one; comments and ``retry`` are skipped)."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def line(self, text: str) -> ServerEvent | None:
        if text == "":
            if not self._data:
                self._event, self._id = "message", None
                return None
            event = ServerEvent(self._event, json.loads("\n".join(self._data)),
                                int(self._id) if self._id is not None else None)
            self._event, self._data, self._id = "message", [], None
            return event
        if text.startswith(":"):
            return None
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def parse_lines(lines: Iterator[str]) -> Iterator[ServerEvent]:
    parser = SSEParser()
    for text in lines:
        event = parser.line(text)
        if event is not None:
            yield event


async def aparse_lines(lines: AsyncIterator[str]) -> AsyncIterator[ServerEvent]:
    parser = SSEParser()
    async for text in lines:
        event = parser.line(text)
        if event is not None:
            yield event

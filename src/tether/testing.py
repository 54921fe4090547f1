"""Test doubles for Tether users and Tether's own tests.

``ScriptedModel`` answers from a script (it is also what the demo and benchmarks use);
``FakeClock`` is a clock that only moves when told to, and records the sleeps asked of it.
"""

from __future__ import annotations

import time

from tether.models import ScriptedModel

__all__ = ["FakeClock", "ScriptedModel"]


class FakeClock:
    """A clock for tests: ``sleep`` returns at once and advances time by the amount asked.

    Args:
        start_ms: the wall time it starts at (default: the real time now).
    """

    def __init__(self, start_ms: int | None = None) -> None:
        self._now_ms = float(time.time_ns() // 1_000_000 if start_ms is None else start_ms)
        self._monotonic = 0.0
        self.sleeps: list[float] = []

    def now_ms(self) -> int:
        """The fake wall time, in UTC epoch milliseconds."""
        return int(self._now_ms)

    def monotonic(self) -> float:
        """Seconds the clock has advanced since it was made."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now_ms += seconds * 1000
        self._monotonic += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time by it, without waiting."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

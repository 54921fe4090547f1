"""However slowly the writer commits, a run never gets far ahead of the disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import tether
from tether.config import Settings
from tether.store import sqlite_path

pytestmark = pytest.mark.anyio


async def test_a_run_waits_for_a_commit_every_lazy_records_per_run_records(
        tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'lazy.db'}"
    lag: list[int] = []  # records this run wrote that a crash right now would lose

    @tether.tool(side_effects=False)
    async def peek(seq: int) -> int:
        # Every earlier effect is written; count how many of them are not yet committed.
        with sqlite3.connect(sqlite_path(db)) as conn:
            committed = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
        lag.append(seq - 1 - committed)
        return seq

    @tether.agent(tools=[peek])
    async def chatty(ctx: tether.Context) -> int:
        for seq in range(1, 41):
            await ctx.tool("peek", {"seq": seq})
        return 40

    # A flush interval far longer than the test: only the per-run bound commits anything.
    settings = Settings(db=db, flush_interval_ms=600_000, lazy_records_per_run=8,
                        poll_interval_seconds=0.05)
    async with tether.Runtime(settings=settings) as rt:
        assert await rt.run(chatty) == 40
    assert max(lag) <= 8
    assert max(lag) >= 7, "the bound is what holds the records back, not a timer"

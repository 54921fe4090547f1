"""Helpers shared by the runtime tests: reading what is committed, collecting events."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import anyio

import tether
from tether.runtime._events import Subscription
from tether.store import sqlite_path


def committed_rows_sync(db_url: str, run_id: str) -> list[tuple[int, str, str, str]]:
    """(seq, kind, name, state) of a run's journal as a separate reader of the file sees it."""
    uri = sqlite_path(db_url).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute("SELECT seq, kind, name, state FROM journal WHERE run_id = ? "
                            "ORDER BY seq", (run_id,)).fetchall()
    finally:
        conn.close()
    return [(int(seq), str(kind), str(name), str(state)) for seq, kind, name, state in rows]


async def committed_rows(rt: tether.Runtime, run_id: str) -> list[tuple[int, str, str, str]]:
    """What another process could read now: a fresh connection on SQLite; the dictionaries
    themselves on memory:// (where every write is visible at once)."""
    if rt.settings.db.startswith("sqlite:"):
        return await anyio.to_thread.run_sync(committed_rows_sync, rt.settings.db, run_id)
    return [(r.seq, r.kind, r.name, r.state) for r in await rt.store.load_journal(run_id)]


async def collect_events(subscription: Subscription, run_id: str,
                         until: Iterable[str] = ("run.completed", "run.failed",
                                                 "run.cancelled", "run.needs_attention"),
                         timeout: float = 10) -> list[tether.Event]:
    """The events of one run, up to and including the first whose type is in ``until``."""
    stop = set(until)
    seen: list[tether.Event] = []
    with anyio.fail_after(timeout):
        async for event in subscription:
            if event.run_id != run_id:
                continue
            seen.append(event)
            if event.type in stop:
                break
    return seen

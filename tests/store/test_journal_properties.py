"""Property: whatever sequence of appends runs, each engine keeps the last accepted version of
every record, and SQLite keeps it across a close and reopen."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import StoreError
from tether.store import Commit, MemoryStore, Record, SQLiteStore, Store

from .helpers import LEASE_MS, OWNER_A, T0, new_run, write
from .strategies import RUNS, Append, appends, apply_forward_only

Journals = dict[str, list[Record]]


async def play(store: Store, ops: list[Append]) -> list[bool]:
    """Run ``ops`` on ``store``; returns which appends were accepted."""
    fences = {}
    for run_id in RUNS:
        created = await store.create_run(new_run(run_id), now_ms=T0, owner=OWNER_A,
                                         lease_ms=LEASE_MS)
        assert created.claim is not None
        fences[run_id] = created.claim.fence
    model: dict[str, dict[int, Record]] = {run_id: {} for run_id in RUNS}
    accepted = []
    for op in ops:
        after = apply_forward_only(model[op.run_id], op.records)
        # Fresh copies: a store may keep the objects it was given.
        batch = [replace(r) for r in op.records]
        if after is None:
            # A refused write is sent WAIT so its failure is seen before anything else is
            # queued, as the runtime sees it before it abandons the claim.
            try:
                await write(store, op.run_id, fences[op.run_id], batch, Commit.WAIT)
            except StoreError:
                store.forget_claim(op.run_id, fences[op.run_id])
            else:
                raise AssertionError(f"{store.location} accepted a change to a final record")
            accepted.append(False)
        else:
            await write(store, op.run_id, fences[op.run_id], batch, op.commit)
            model[op.run_id] = after
            accepted.append(True)
    return accepted


def expected_journals(ops: list[Append]) -> Journals:
    model: dict[str, dict[int, Record]] = {run_id: {} for run_id in RUNS}
    for op in ops:
        after = apply_forward_only(model[op.run_id], op.records)
        if after is not None:
            model[op.run_id] = after
    return {run_id: [model[run_id][seq] for seq in sorted(model[run_id])] for run_id in RUNS}


async def journals(store: Store) -> Journals:
    return {run_id: await store.load_journal(run_id) for run_id in RUNS}


async def on_memory(ops: list[Append]) -> Journals:
    store = MemoryStore()
    await store.open()
    try:
        await play(store, ops)
        return await journals(store)
    finally:
        await store.aclose()


async def on_sqlite(ops: list[Append], path: Path, flush_interval_ms: int) -> Journals:
    store = SQLiteStore(path, flush_interval_ms=flush_interval_ms, durability="process")
    await store.open()
    try:
        await play(store, ops)
    finally:
        await store.aclose()
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        return await journals(reopened)
    finally:
        await reopened.aclose()


@settings(max_examples=60)
@given(ops=st.lists(appends, max_size=20), flush_interval_ms=st.sampled_from([1, 60_000]))
def test_both_engines_keep_the_last_accepted_version_of_each_record(
        ops: list[Append], flush_interval_ms: int) -> None:
    expected = expected_journals(ops)
    memory = anyio.run(on_memory, ops)
    with tempfile.TemporaryDirectory() as directory:
        sqlite = anyio.run(on_sqlite, ops, Path(directory) / "tether.db", flush_interval_ms)
    assert memory == expected
    assert sqlite == expected

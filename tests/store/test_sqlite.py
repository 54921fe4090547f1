"""What only the SQLite engine has: a file to refuse untouched, group commit, durability."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from tether.config import Durability
from tether.errors import LeaseLost, SchemaTooNew, StoreCorrupt, StoreError
from tether.store import Claim, Commit, SQLiteStore
from tether.types import RunStatus

from .helpers import LEASE_MS, OWNER_A, T0, create_claimed, new_run, record, take_over, write

pytestmark = pytest.mark.anyio


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


async def make_tether_database(path: Path, runs: int = 40) -> None:
    """A real Tether database of several pages, closed cleanly (so still in WAL mode)."""
    store = SQLiteStore(path)
    await store.open()
    try:
        for i in range(runs):
            claim = await create_claimed(store, f"r{i}", now_ms=T0 + i)
            await write(store, f"r{i}", claim.fence, [record(1, value='"' + "x" * 400 + '"')])
    finally:
        await store.aclose()


async def refused(path: Path, expected: type[StoreError]) -> StoreError:
    """Open ``path``, expect ``expected``, and check the file and its directory are as before."""
    before, siblings = fingerprint(path), side_files(path)
    store = SQLiteStore(path)
    with pytest.raises(expected) as raised:
        await store.open()
    await store.aclose()
    assert fingerprint(path) == before, "a refused file must not be modified"
    assert side_files(path) == siblings, "a refused file must not grow -wal or -shm files"
    assert str(path) in str(raised.value), "the message names the file"
    return raised.value


def page_size(path: Path) -> int:
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65_536 if size == 1 else size


# -- files that are refused ----------------------------------------------------------------


async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, flour, milk\n" * 200)
    error = await refused(path, StoreCorrupt)
    assert "not a Tether database" in str(error)


async def test_a_truncated_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_tether_database(path)
    data = path.read_bytes()
    assert len(data) > 4 * page_size(path)
    path.write_bytes(data[:len(data) // 2])
    await refused(path, StoreCorrupt)


async def test_a_database_with_garbage_over_its_schema_is_refused_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_tether_database(path)
    data = bytearray(path.read_bytes())
    data[100:page_size(path)] = os.urandom(page_size(path) - 100)
    path.write_bytes(bytes(data))
    await refused(path, StoreCorrupt)


async def test_a_database_with_a_garbage_header_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_tether_database(path)
    data = bytearray(path.read_bytes())
    data[:100] = b"\x5a" * 100
    path.write_bytes(bytes(data))
    await refused(path, StoreCorrupt)


async def test_damage_inside_a_data_page_is_reported_as_corrupt_and_the_file_kept(
        tmp_path: Path) -> None:
    """Damage the open-time checks cannot see must surface as StoreCorrupt when it is read."""
    path = tmp_path / "tether.db"
    await make_tether_database(path)
    size = page_size(path)
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // size):  # every page but the first (the schema)
        data[page * size + 8:(page + 1) * size] = b"\xff" * (size - 8)
    path.write_bytes(bytes(data))
    before = fingerprint(path)

    async def open_and_read(store: SQLiteStore) -> None:
        await store.open()
        await store.list_runs()
        await store.load_journal("r1")

    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreCorrupt):
            await open_and_read(store)
    finally:
        await store.aclose()
    assert fingerprint(path) == before


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
async def test_an_sqlite_database_of_another_application_is_refused_untouched(
        tmp_path: Path, journal_mode: str) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    error = await refused(path, StoreCorrupt)
    assert "invoices" in str(error)


async def test_a_database_from_a_newer_tether_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    await make_tether_database(path, runs=2)
    conn = sqlite3.connect(path)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    conn.execute(f"PRAGMA user_version = {version + 1}")
    conn.commit()
    conn.close()
    error = await refused(path, SchemaTooNew)
    assert isinstance(error, SchemaTooNew)
    assert (error.found, error.supported) == (version + 1, version)
    assert "upgrade" in str(error)


# -- files that are kept -------------------------------------------------------------------


async def test_reopening_a_tether_database_keeps_its_runs_journals_and_signals(
        tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        claim = await create_claimed(store, "r1")
        await write(store, "r1", claim.fence, [record(1), record(2)])
        await store.suspend_run("r1", claim.fence, wake_at_ms=None, waiting_for="go",
                                now_ms=T0 + 1)
        await store.create_run(new_run("r2"), now_ms=T0 + 2, owner=None, lease_ms=LEASE_MS)
        runs = await store.list_runs()
        journal = await store.load_journal("r1")
    finally:
        await store.aclose()
    assert side_files(path) == []  # a clean close leaves one self-contained file

    again = SQLiteStore(path)
    await again.open()
    try:
        assert await again.list_runs() == runs
        assert await again.load_journal("r1") == journal
        woken = await again.send_signal("r1", "go", '"now"', now_ms=T0 + 3)
        assert woken.status is RunStatus.PENDING
    finally:
        await again.aclose()


async def test_an_empty_file_becomes_a_tether_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "tether.db"
    path.parent.mkdir(parents=True)
    path.touch()
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create_run(new_run("r1"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
        assert [run.run_id for run in await store.list_runs()] == ["r1"]
    finally:
        await store.aclose()


async def test_a_missing_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tether.db"
    store = SQLiteStore(path)
    await store.open()
    await store.aclose()
    assert path.is_file()


# -- durability ----------------------------------------------------------------------------


@pytest.mark.parametrize(("durability", "expected"), [("power", 2), ("process", 1)])
async def test_durability_sets_the_writers_synchronous_mode(
        tmp_path: Path, durability: Durability, expected: int) -> None:
    """power -> synchronous=FULL (2), process -> NORMAL (1). The setting is per connection,
    so it can only be read on the writer's own connection (idle after a durable write)."""
    store = SQLiteStore(tmp_path / "tether.db", durability=durability)
    await store.open()
    try:
        await store.create_run(new_run("r1"), now_ms=T0, owner=None, lease_ms=LEASE_MS)
        writer = store._writer
        assert writer is not None
        (synchronous,) = writer.conn.execute("PRAGMA synchronous").fetchone()
        assert synchronous == expected
    finally:
        await store.aclose()


# -- group commit --------------------------------------------------------------------------


async def test_lazy_writes_are_invisible_until_a_durable_write_commits_them_together(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=60_000)
    await store.open()
    try:
        a = await create_claimed(store, "a")
        b = await create_claimed(store, "b")
        await write(store, "a", a.fence, [record(1)], Commit.LAZY)
        await write(store, "a", a.fence, [record(2)], Commit.LAZY)
        await anyio.sleep(0.05)
        assert await store.load_journal("a") == []
        batches = store.batches
        await write(store, "b", b.fence, [record(1)], Commit.WAIT)
        assert store.batches == batches + 1
        assert [r.seq for r in await store.load_journal("a")] == [1, 2]
    finally:
        await store.aclose()


async def test_lazy_writes_commit_within_the_flush_interval_when_nobody_waits(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=20)
    await store.open()
    try:
        claim = await create_claimed(store, "r1")
        await write(store, "r1", claim.fence, [record(1)], Commit.LAZY)
        with anyio.fail_after(5):
            while not await store.load_journal("r1"):
                await anyio.sleep(0.01)
    finally:
        await store.aclose()


async def test_close_commits_queued_lazy_writes(tmp_path: Path) -> None:
    path = tmp_path / "tether.db"
    store = SQLiteStore(path, flush_interval_ms=60_000)
    await store.open()
    claim = await create_claimed(store, "r1")
    await write(store, "r1", claim.fence, [record(1), record(2)], Commit.LAZY)
    await store.aclose()
    again = SQLiteStore(path)
    await again.open()
    try:
        assert [r.seq for r in await again.load_journal("r1")] == [1, 2]
    finally:
        await again.aclose()


async def test_concurrent_appends_of_many_runs_share_few_transactions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=5)
    await store.open()
    runs, steps = 40, 12
    try:
        claims = [await create_claimed(store, f"r{i}") for i in range(runs)]
        before = store.batches

        async def drive(claim: Claim) -> None:
            for seq in range(1, steps + 1):
                commit = Commit.WAIT if seq % 3 == 0 or seq == steps else Commit.LAZY
                await write(store, claim.run.run_id, claim.fence, [record(seq)], commit)

        async with anyio.create_task_group() as tg:
            for claim in claims:
                tg.start_soon(drive, claim)
        transactions = store.batches - before
        appends = runs * steps
        assert 0 < transactions <= appends // 10, (transactions, appends)
        for claim in claims:
            journal = await store.load_journal(claim.run.run_id)
            assert [r.seq for r in journal] == list(range(1, steps + 1))
    finally:
        await store.aclose()


async def test_a_stale_write_in_a_batch_does_not_affect_the_other_runs_in_it(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=60_000)
    await store.open()
    try:
        good = await create_claimed(store, "good")
        stale = await create_claimed(store, "stale", owner=OWNER_A)
        other = await create_claimed(store, "other")
        await take_over(store, "stale")
        before = store.batches
        # Queued without waiting, so all three land in the batch the last one starts.
        await write(store, "good", good.fence, [record(1), record(2)], Commit.LAZY)
        await write(store, "stale", stale.fence, [record(1)], Commit.LAZY)
        await write(store, "other", other.fence, [record(1)], Commit.WAIT)
        assert store.batches == before + 1
        assert [r.seq for r in await store.load_journal("good")] == [1, 2]
        assert [r.seq for r in await store.load_journal("other")] == [1]
        assert await store.load_journal("stale") == []
        # The stale writer learns at once, without another transaction.
        with pytest.raises(LeaseLost):
            await write(store, "stale", stale.fence, [record(2)], Commit.LAZY)
        assert store.batches == before + 1
    finally:
        await store.aclose()


async def test_a_run_whose_lazy_write_failed_is_poisoned_until_its_claim_is_forgotten(
        tmp_path: Path) -> None:
    """After a lost lazy write, the run's next writes fail at once: its journal never gets a
    gap. Forgetting the claim (the runtime abandoned it) lifts that."""
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=60_000)
    await store.open()
    try:
        claim = await create_claimed(store, "r1")
        other = await create_claimed(store, "other")
        await write(store, "r1", claim.fence, [record(1, value='"kept"')])
        # A lazy write the batch must refuse: it changes a final record.
        await write(store, "r1", claim.fence, [record(1, value='"changed"')], Commit.LAZY)
        await write(store, "other", other.fence, [record(1)], Commit.WAIT)
        batches = store.batches

        with pytest.raises(StoreError):
            store.append("r1", claim.fence, [record(2)], Commit.LAZY)
        with pytest.raises(StoreError):
            await write(store, "r1", claim.fence, [record(2)], Commit.WAIT)
        with pytest.raises(StoreError):
            await store.finish_run("r1", claim.fence, status=RunStatus.COMPLETED, result="1",
                                   error=None, now_ms=T0 + 1)
        assert store.batches == batches, "a poisoned write fails without a transaction"
        assert [r.value for r in await store.load_journal("r1")] == ['"kept"']
        run = await store.get_run("r1")
        assert run is not None
        assert run.status is RunStatus.RUNNING

        store.forget_claim("r1", claim.fence)
        await write(store, "r1", claim.fence, [record(2)], Commit.WAIT)
        assert [r.seq for r in await store.load_journal("r1")] == [1, 2]
    finally:
        await store.aclose()


async def test_a_poisoned_lazy_write_fails_the_writes_queued_after_it_in_the_same_batch(
        tmp_path: Path) -> None:
    """Seq 2 must not commit when seq 1 of the same run was refused in the same batch."""
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=60_000)
    await store.open()
    try:
        claim = await create_claimed(store, "r1")
        await write(store, "r1", claim.fence, [record(1, value='"kept"')])
        await write(store, "r1", claim.fence, [record(1, value='"changed"')], Commit.LAZY)
        await write(store, "r1", claim.fence, [record(2)], Commit.LAZY)
        with pytest.raises(StoreError):
            await write(store, "r1", claim.fence, [record(3)], Commit.WAIT)
        assert [r.seq for r in await store.load_journal("r1")] == [1]
    finally:
        await store.aclose()

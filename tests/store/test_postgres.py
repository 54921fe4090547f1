"""What only the PostgreSQL engine has: a schema of its own, concurrent claims from several
stores (as from several worker processes), fencing records, NOTIFY, and surviving a dropped
connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import psycopg
import pytest

from peers import drop_postgres_schema, postgres_schema_url, postgres_url, schema_for
from tether.errors import (
    ConfigError,
    LeaseLost,
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
    UsageError,
)
from tether.store import Approval, Commit, PostgresStore
from tether.store._postgres import split_url
from tether.types import Run, RunStatus

from .helpers import (
    LEASE_MS,
    OWNER_A,
    OWNER_B,
    T0,
    create_claimed,
    new_run,
    nobody_is_dead,
    record,
    write,
)

pytestmark = pytest.mark.anyio

T1 = TypeVar("T1")
T2 = TypeVar("T2")


@pytest.fixture
async def schema(tmp_path: Path) -> AsyncIterator[str]:
    name = schema_for(tmp_path)
    yield name
    drop_postgres_schema(name)


async def opened(schema: str) -> PostgresStore:
    store = PostgresStore(postgres_schema_url(schema), flush_interval_ms=5)
    await store.open()
    return store


def sql(statement: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_url_schema_and_masked_password() -> None:
    conninfo, schema, location = split_url("postgresql://app:s3cret@db:5432/prod?schema=agents"
                                           "&sslmode=require")
    assert schema == "agents"
    assert conninfo == "postgresql://app:s3cret@db:5432/prod?sslmode=require"
    assert "s3cret" not in location
    assert "app:***@db" in location
    assert split_url("postgresql://db/prod")[1] == "tether"
    with pytest.raises(ConfigError, match="schema must be"):
        split_url("postgresql://db/prod?schema=Robert'); DROP TABLE runs")


async def test_a_schema_holding_something_else_is_refused_untouched(schema: str) -> None:
    sql(f"CREATE SCHEMA {schema}")
    sql(f"CREATE TABLE {schema}.invoices (id int)")
    with pytest.raises(StoreCorrupt, match="holds tables of something else"):
        await opened(schema)
    tables = sql("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                 schema)
    assert tables == [("invoices",)]


async def test_a_schema_from_a_newer_tether_is_refused(schema: str) -> None:
    store = await opened(schema)
    await store.aclose()
    sql(f"UPDATE {schema}.tether_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaTooNew):
        await opened(schema)


async def test_an_unreachable_server_is_a_store_error_that_says_what_to_check() -> None:
    store = PostgresStore("postgresql://nobody:pw@127.0.0.1:1/none?schema=x")
    with pytest.raises(StoreError, match="cannot reach PostgreSQL") as caught:
        await store.open()
    assert "pw" not in caught.value.message


async def test_two_stores_claiming_at_once_never_take_the_same_run(schema: str) -> None:
    """As two worker processes would: separate connections, separate writers."""
    first, second = await opened(schema), await opened(schema)
    try:
        for n in range(200):
            await first.create_run(new_run(f"r{n:03d}"), now_ms=T0, owner=None, lease_ms=0)
        taken: dict[str, list[str]] = {OWNER_A: [], OWNER_B: []}

        async def claim_all(store: PostgresStore, owner: str) -> None:
            while True:
                claims = await store.claim_runs(owner=owner, now_ms=T0, lease_ms=LEASE_MS,
                                                limit=7, owner_is_dead=nobody_is_dead)
                if not claims:
                    return
                taken[owner] += [claim.run.run_id for claim in claims]

        async with anyio.create_task_group() as group:
            group.start_soon(claim_all, first, OWNER_A)
            group.start_soon(claim_all, second, OWNER_B)
        assert sorted(taken[OWNER_A] + taken[OWNER_B]) == [f"r{n:03d}" for n in range(200)]
        assert taken[OWNER_A], "both stores should have claimed some"
        assert taken[OWNER_B], "both stores should have claimed some"
    finally:
        await first.aclose()
        await second.aclose()


async def test_every_claim_and_the_fence_of_every_record_are_on_record(schema: str) -> None:
    store = await opened(schema)
    try:
        claim = await create_claimed(store, "r1", owner=OWNER_A)
        await write(store, "r1", claim.fence, [record(1)])
        [taken] = await store.claim_runs(owner=OWNER_B, now_ms=T0 + LEASE_MS + 1,
                                         lease_ms=LEASE_MS, limit=1,
                                         owner_is_dead=nobody_is_dead)
        await write(store, "r1", taken.fence, [record(2)])
        with pytest.raises(LeaseLost):
            await write(store, "r1", claim.fence, [record(3)])
        assert await store.claims("r1") == [(1, OWNER_A, T0), (2, OWNER_B, T0 + LEASE_MS + 1)]
        assert await store.record_fences("r1") == [(1, 1), (2, 2)]
    finally:
        await store.aclose()


async def test_a_new_run_wakes_a_watching_store_of_another_process(schema: str) -> None:
    watcher, creator = await opened(schema), await opened(schema)
    woken = anyio.Event()
    wakes: list[int | None] = []

    def wake(at_ms: int | None) -> None:
        wakes.append(at_ms)
        if len(wakes) >= 3:  # once on connecting, then the new run, then the timer
            woken.set()

    watcher.watch(wake)
    try:
        with anyio.fail_after(10):
            while not wakes:
                await anyio.sleep(0.01)
            await creator.create_run(new_run("r1"), now_ms=T0, owner=None, lease_ms=0)
            claim = await create_claimed(creator, "r2", owner=OWNER_B)
            await creator.suspend_run("r2", claim.fence, wake_at_ms=T0 + 5_000, waiting_for=None,
                                      now_ms=T0)
            await woken.wait()
        assert wakes == [None, None, T0 + 5_000]
    finally:
        await watcher.aclose()
        await creator.aclose()


async def test_runs_abandoned_when_the_connection_dropped_are_claimed_back_at_once(
        schema: str) -> None:
    store = await opened(schema)
    try:
        claim = await create_claimed(store, "r1", owner=OWNER_A)
        await write(store, "r1", claim.fence, [record(1)])
        [(killed,)] = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = %s", f"tether-writer:{schema}")
        assert killed
        with pytest.raises(StoreError, match="cannot reach PostgreSQL"):
            await write(store, "r1", claim.fence, [record(2)])
        # The writer reconnected; the run is still ours with an unexpired lease: another
        # owner cannot take it until the lease lapses, but once the runtime abandons the
        # claim, the same owner takes it back at once.
        assert await store.claim_runs(owner=OWNER_B, now_ms=T0 + 1, lease_ms=LEASE_MS,
                                      limit=5, owner_is_dead=nobody_is_dead) == []
        store.forget_claim("r1", claim.fence)  # what the runtime does when it abandons a run
        [again] = await store.claim_runs(owner=OWNER_A, now_ms=T0 + 1, lease_ms=LEASE_MS,
                                         limit=5, owner_is_dead=nobody_is_dead)
        assert (again.run.run_id, again.fence) == ("r1", claim.fence + 1)
        await write(store, "r1", again.fence, [record(2)])
        assert [r.seq for r in await store.load_journal("r1")] == [1, 2]
        assert await store.claim_runs(owner=OWNER_A, now_ms=T0 + 2, lease_ms=LEASE_MS,
                                      limit=5, owner_is_dead=nobody_is_dead) == []
    finally:
        await store.aclose()


async def race(schema: str, lock_sql: str, first: Callable[[], Awaitable[T1]],
               second: Callable[[], Awaitable[T2]]) -> tuple[T1 | BaseException,
                                                              T2 | BaseException]:
    """Start ``first`` then ``second`` while a third connection holds the row ``lock_sql``
    locks, so both have started before either can write: the interleaving two processes
    would hit by chance, made certain."""
    blocker = psycopg.connect(postgres_url(), autocommit=False,
                              options=f"-c search_path={schema}")
    try:
        blocker.execute(lock_sql)
        results: list[Any] = [None, None]

        async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
            try:
                results[index] = await call()
            except Exception as exc:  # noqa: BLE001 -- the caller inspects what each got
                results[index] = exc

        async with anyio.create_task_group() as group:
            group.start_soon(run, 0, first)
            await anyio.sleep(0.3)
            group.start_soon(run, 1, second)
            await anyio.sleep(0.3)
            blocker.rollback()
    finally:
        blocker.close()
    return results[0], results[1]


async def test_two_deciders_of_one_approval_cannot_both_win(schema: str) -> None:
    a, b = await opened(schema), await opened(schema)
    try:
        await a.request_approval(Approval(
            "r1:3", "r1", 3, "acme", "alice", "agent", "wire_money", '{"amount": 10000}', None,
            "[]", "pending", 0, 10**15))
        denied, approved = await race(
            schema, "SELECT 1 FROM approvals WHERE approval_id = 'r1:3' FOR UPDATE",
            lambda: a.decide_approval("r1:3", status="denied", by="bob", reason="no",
                                      now_ms=1),
            lambda: b.decide_approval("r1:3", status="approved", by="mallory", reason="yes",
                                      now_ms=2))
        assert isinstance(denied, Approval)
        assert denied.status == "denied"
        assert isinstance(approved, UsageError)  # no longer pending
        stored = await a.get_approval("r1:3")
        assert stored is not None
        assert (stored.status, stored.decided_by) == ("denied", "bob")
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_cancel_racing_a_finish_never_overwrites_the_finished_run(schema: str) -> None:
    worker, operator = await opened(schema), await opened(schema)
    try:
        claim = await create_claimed(worker, "r1", owner=OWNER_A)
        finished, cancelled = await race(
            schema, "SELECT 1 FROM runs WHERE run_id = 'r1' FOR UPDATE",
            lambda: worker.finish_run("r1", claim.fence, status=RunStatus.COMPLETED,
                                      result='"the answer"', error=None, now_ms=T0 + 1),
            lambda: operator.cancel_run("r1", reason={"by": "op"}, now_ms=T0 + 2))
        assert finished is None  # the worker was told its finish committed
        assert isinstance(cancelled, Run)
        assert cancelled.status is RunStatus.COMPLETED  # so it stands: nothing to cancel
        assert cancelled.result == "the answer"
    finally:
        await worker.aclose()
        await operator.aclose()


async def test_two_workers_auditing_tenants_in_opposite_orders_lose_nothing(
        schema: str) -> None:
    """Each batch locks its tenants' chains; taken in opposite orders they would deadlock and
    PostgreSQL would abort one batch, records nobody waited for included."""
    a, b = await opened(schema), await opened(schema)
    try:
        blocker = psycopg.connect(postgres_url(), autocommit=False)
        try:  # hold T2 so that both batches are in flight together
            blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                            ("tether.audit:T2",))
            b.append_audit("T2", ['{"who":"b","n":1}'], Commit.LAZY)
            b_done = b.append_audit("T1", ['{"who":"b","n":2}'], Commit.WAIT)
            await anyio.sleep(0.3)
            a.append_audit("T1", ['{"who":"a","n":1}'], Commit.LAZY)
            a.append_audit("T2", ['{"who":"a","decision":"deny"}'], Commit.LAZY)
            a_done = a.append_audit("T3", ['{"who":"a","n":3}'], Commit.WAIT)
            await anyio.sleep(0.3)
        finally:
            blocker.rollback()
            blocker.close()
        assert a_done is not None
        assert b_done is not None
        with anyio.fail_after(10):
            await a_done
            await b_done
        bodies = {tenant: sorted(row.body for row in await a.load_audit(tenant))
                  for tenant in ("T1", "T2", "T3")}
        assert bodies == {
            "T1": ['{"who":"a","n":1}', '{"who":"b","n":2}'],
            "T2": ['{"who":"a","decision":"deny"}', '{"who":"b","n":1}'],
            "T3": ['{"who":"a","n":3}']}
    finally:
        await a.aclose()
        await b.aclose()

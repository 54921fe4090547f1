"""``RoutedStore``: each tenant's data lands only in its home region's store (checked by
reading both SQLite files), a tenant without a home is refused, and the calls that span
regions (claims, listings, timers) treat them fairly. The shared protocol tests run on it
too (``routed`` in ``tests/store/conftest.py``)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from peers import drop_postgres_schema, postgres_schema_url, postgres_url, schema_for
from tether.config import Regions, Settings, load_settings
from tether.errors import ConfigError, NoHomeRegion, ResidencyViolation, RunNotFound, UsageError
from tether.store import (
    Approval,
    Commit,
    LedgerEntry,
    NewRun,
    RoutedStore,
    SQLiteStore,
    open_store,
)
from tether.types import RunStatus

from .helpers import LEASE_MS, OWNER_A, T0, new_run, nobody_is_dead, record, write

pytestmark = pytest.mark.anyio

HOMES = {"acme": "eu", "globex": "us"}


def in_tenant(run_id: str, tenant: str, **changes: Any) -> NewRun:
    return dataclasses.replace(new_run(run_id, **changes), tenant=tenant)


@asynccontextmanager
async def routed(tmp_path: Path) -> AsyncIterator[RoutedStore]:
    store = RoutedStore({region: SQLiteStore(tmp_path / f"{region}.db")
                         for region in ("eu", "us")}, HOMES)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def column(path: Path, sql: str) -> list[Any]:
    """The first column of a query on the file itself, opened read-only."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute(sql)]


def approval(run_id: str, tenant: str) -> Approval:
    return Approval(approval_id=f"{run_id}:1", run_id=run_id, seq=1, tenant=tenant,
                    principal="alice", agent="greeter", tool="refund", args="{}", message=None,
                    policies="[]", status="pending", requested_at_ms=T0,
                    expires_at_ms=T0 + 60_000)


async def test_each_tenants_data_is_written_only_to_its_regions_file(tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        for tenant, run_id in (("acme", "acme-run"), ("globex", "globex-run")):
            created = await store.create_run(in_tenant(run_id, tenant), now_ms=T0,
                                             owner=OWNER_A, lease_ms=LEASE_MS)
            assert created.claim is not None
            await write(store, run_id, created.claim.fence, [record(1)])
            await store.send_signal(run_id, "go", '"now"', now_ms=T0)
            await store.request_approval(approval(run_id, tenant))
            pending = store.append_audit(tenant, [f'{{"run":"{run_id}"}}'], Commit.WAIT)
            assert pending is not None
            await pending
            await store.ledger_post(f"{run_id}:1", [
                LedgerEntry(f"tenant:{tenant}:run:{run_id}:steps", 1, cap=5)], now_ms=T0)
            await store.gcra(f"rl:per-tenant:requests|tenant={tenant}", now_us=0,
                             increment_us=1, limit_us=10)
        # A limit kept across tenants lives in the first region configured.
        await store.gcra("rl:model-rpm:requests|model=m", now_us=0, increment_us=1,
                         limit_us=10)
    for region, tenant, run_id in (("eu", "acme", "acme-run"), ("us", "globex", "globex-run")):
        db = tmp_path / f"{region}.db"
        assert column(db, "SELECT tenant FROM runs") == [tenant]
        assert column(db, "SELECT DISTINCT run_id FROM journal") == [run_id]
        assert column(db, "SELECT run_id FROM signals") == [run_id]
        assert column(db, "SELECT tenant FROM approvals") == [tenant]
        assert column(db, "SELECT DISTINCT tenant FROM audit") == [tenant]
        assert column(db, "SELECT scope FROM ledger") == [f"tenant:{tenant}:run:{run_id}:steps"]
        assert column(db, "SELECT post_id FROM ledger_posts") == [f"{run_id}:1"]
        keys = column(db, "SELECT key FROM rate_limits ORDER BY key")
        assert f"rl:per-tenant:requests|tenant={tenant}" in keys
    assert "rl:model-rpm:requests|model=m" in column(tmp_path / "eu.db",
                                                     "SELECT key FROM rate_limits")


async def test_a_tenant_without_a_home_region_is_refused_and_nothing_of_it_is_kept(
        tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        with pytest.raises(NoHomeRegion) as caught:
            await store.create_run(in_tenant("r1", "initech"), now_ms=T0, owner=None,
                                   lease_ms=LEASE_MS)
        assert caught.value.code == "residency.no_home_region"
        assert caught.value.tenant == "initech"
        assert "[governance.residency]" in caught.value.message
        assert 'initech = ["eu"]' in caught.value.message
        with pytest.raises(NoHomeRegion):
            store.append_audit("initech", ['{"n":1}'], Commit.WAIT)
        with pytest.raises(NoHomeRegion):
            await store.request_approval(approval("r1", "initech"))
        with pytest.raises(NoHomeRegion):
            await store.ledger_post("p", [LedgerEntry("tenant:initech:run:r1:steps", 1)],
                                    now_ms=T0)
        with pytest.raises(NoHomeRegion):
            await store.gcra("rl:x:requests|tenant=initech", now_us=0, increment_us=1,
                             limit_us=10)
        assert await store.get_run("r1") is None
    for region in ("eu", "us"):
        db = tmp_path / f"{region}.db"
        for table in ("runs", "audit", "approvals", "ledger", "ledger_posts", "rate_limits"):
            assert column(db, f"SELECT count(*) FROM {table}") == [0], (region, table)


async def test_a_ledger_post_must_name_exactly_one_tenant(tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        with pytest.raises(UsageError, match="names no tenant"):
            await store.ledger_post("p", [LedgerEntry("run:r1:steps", 1)], now_ms=T0)
        with pytest.raises(UsageError, match="exactly one tenant"):
            await store.ledger_post("p", [LedgerEntry("tenant:acme:day:steps", 1),
                                          LedgerEntry("tenant:globex:day:steps", 1)], now_ms=T0)
        with pytest.raises(UsageError, match="names no tenant"):
            await store.ledger_balances(["steps"])


async def test_claims_share_the_limit_and_fill_from_the_region_with_more(
        tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        for i in range(4):
            for tenant in HOMES:
                await store.create_run(in_tenant(f"{tenant}-{i}", tenant), now_ms=T0 + i,
                                       owner=None, lease_ms=LEASE_MS)

        async def claim(limit: int) -> list[str]:
            claims = await store.claim_runs(owner=OWNER_A, now_ms=T0 + 10, lease_ms=LEASE_MS,
                                            limit=limit, owner_is_dead=nobody_is_dead)
            return sorted(claim.run.tenant for claim in claims)

        assert await claim(4) == ["acme", "acme", "globex", "globex"]
        for i in range(4, 8):
            await store.create_run(in_tenant(f"acme-{i}", "acme"), now_ms=T0 + i, owner=None,
                                   lease_ms=LEASE_MS)
        # Left: six in eu, two in us. Shares of three each; what us cannot use goes to eu.
        assert await claim(6) == ["acme"] * 4 + ["globex"] * 2
        assert await claim(6) == ["acme", "acme"]
        assert await claim(6) == []


async def test_a_fresh_routed_store_finds_each_run_in_its_region(tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        created = await store.create_run(in_tenant("g1", "globex"), now_ms=T0, owner=OWNER_A,
                                         lease_ms=LEASE_MS)
        assert created.claim is not None
        await write(store, "g1", created.claim.fence, [record(1)])
    async with routed(tmp_path) as again:  # its map of runs to regions is empty
        run = await again.get_run("g1")
        assert run is not None
        assert run.tenant == "globex"
        assert [r.seq for r in await again.load_journal("g1")] == [1]
        cancelled = await again.cancel_run("g1", reason={"by": "ops"}, now_ms=T0 + 1)
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(RunNotFound):
            await again.send_signal("nowhere", "go", None, now_ms=T0)
        assert await again.load_journal("nowhere") == []


async def test_a_run_id_taken_in_another_region_is_that_run(tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        await store.create_run(in_tenant("r1", "acme"), now_ms=T0, owner=None,
                               lease_ms=LEASE_MS)
        again = await store.create_run(in_tenant("r1", "globex"), now_ms=T0 + 1, owner=OWNER_A,
                                       lease_ms=LEASE_MS)
        assert (again.run.tenant, again.claim) == ("acme", None)
    assert column(tmp_path / "us.db", "SELECT count(*) FROM runs") == [0]


async def test_listing_merges_regions_newest_first_and_timers_take_the_earliest(
        tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        for i, tenant in enumerate(["acme", "globex", "acme", "globex", "acme"]):
            created = await store.create_run(in_tenant(f"r{i}", tenant), now_ms=T0 + i,
                                             owner=OWNER_A, lease_ms=LEASE_MS)
            assert created.claim is not None
            if i in (1, 2):
                await store.suspend_run(f"r{i}", created.claim.fence, wake_at_ms=T0 + 100 - i,
                                        waiting_for=None, now_ms=T0 + i)
        assert [run.run_id for run in await store.list_runs(limit=3)] == ["r4", "r3", "r2"]
        seen: list[str] = []
        before: tuple[int, str] | None = None
        while page := await store.list_runs(limit=2, before=before):
            seen.extend(run.run_id for run in page)
            before = (page[-1].created_at_ms, page[-1].run_id)
        assert seen == ["r4", "r3", "r2", "r1", "r0"]
        assert [run.run_id for run in await store.list_runs(tenant="globex")] == ["r3", "r1"]
        assert await store.next_wake_ms() == T0 + 98
        assert await store.count_runnable(now_ms=T0 + 10) == 3


async def test_a_thread_whose_runs_sit_in_two_regions_is_refused(tmp_path: Path) -> None:
    async with routed(tmp_path) as store:
        for tenant in HOMES:
            created = await store.create_run(in_tenant(tenant, tenant, thread_id="th"),
                                             now_ms=T0, owner=OWNER_A, lease_ms=LEASE_MS)
            assert created.claim is not None
            await write(store, tenant, created.claim.fence, [record(
                1, kind="thread", value='[{"role": "user", "content": "hi"}]')])
            await store.finish_run(tenant, created.claim.fence, status=RunStatus.COMPLETED,
                                   result=None, error=None, now_ms=T0 + 1)
        with pytest.raises(ResidencyViolation, match="thread 'th' has runs in regions eu, us"):
            await store.load_thread("th")


async def test_a_region_may_keep_its_data_in_postgresql(tmp_path: Path) -> None:
    import psycopg

    schema = schema_for(tmp_path)
    try:
        store = open_store(Settings(regions=Regions(
            stores={"eu": f"sqlite:///{tmp_path}/eu.db", "us": postgres_schema_url(schema)},
            homes=HOMES)))
        await store.open()
        try:
            for tenant in HOMES:
                await store.create_run(in_tenant(f"{tenant}-1", tenant), now_ms=T0, owner=None,
                                       lease_ms=LEASE_MS)
                await store.ledger_post(f"{tenant}-1:1", [
                    LedgerEntry(f"tenant:{tenant}:run:{tenant}-1:steps", 1)], now_ms=T0)
            claims = await store.claim_runs(owner=OWNER_A, now_ms=T0, lease_ms=LEASE_MS,
                                            limit=10, owner_is_dead=nobody_is_dead)
            assert sorted(claim.run.run_id for claim in claims) == ["acme-1", "globex-1"]
        finally:
            await store.aclose()
        assert column(tmp_path / "eu.db", "SELECT run_id FROM runs") == ["acme-1"]
        with psycopg.connect(postgres_url()) as conn:
            assert conn.execute(f"SELECT run_id FROM {schema}.runs").fetchall() == [
                ("globex-1",)]
            assert conn.execute(f"SELECT scope FROM {schema}.ledger").fetchall() == [
                ("tenant:globex:run:globex-1:steps",)]
    finally:
        drop_postgres_schema(schema)


# -- configuration -----------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tether.toml"
    path.write_text(text)
    return path


REGIONS = """
[regions.eu]
db = "sqlite:///{dir}/eu.db"
[regions.us]
db = "sqlite:///{dir}/us.db"
"""


async def test_regions_and_homes_come_from_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, REGIONS.format(dir=tmp_path) + """
[governance.residency]
tenants = { acme = ["eu"], globex = ["apac", "us", "eu"] }
""")
    settings = load_settings(path)
    assert settings.regions == Regions(
        stores={"eu": f"sqlite:///{tmp_path}/eu.db", "us": f"sqlite:///{tmp_path}/us.db"},
        homes={"acme": "eu", "globex": "us"})  # the first listed region that has a store
    store = open_store(settings)
    assert isinstance(store, RoutedStore)
    assert store.location == f"regions eu={tmp_path}/eu.db, us={tmp_path}/us.db"
    await store.open()
    await store.aclose()
    assert (tmp_path / "eu.db").exists()
    assert (tmp_path / "us.db").exists()


@pytest.mark.parametrize(("text", "message"), [
    (REGIONS + '[governance.residency]\ntenants = { initech = ["apac"] }\n',
     r"none of its regions \(apac\) has a store.*add \[regions.apac\]"),
    ('[regions.eu]\nurl = "sqlite:///eu.db"\n', r"\[regions.eu\] takes exactly one key, db"),
    ('[regions.eu]\ndb = "mysql://x"\n', "regions.eu.db must be sqlite:///PATH"),
    ('[regions.eu]\ndb = "sqlite:///a.db"\n[regions.us]\ndb = "sqlite:///a.db"\n',
     "regions eu and us name the same database"),
    (REGIONS + '[governance.residency]\ntenants = { "a:b" = ["eu"] }\n',
     "may not contain ':' or '|'"),
    ("regions = 1\n", r"\[regions\] must hold tables"),
])
def test_bad_regions_are_refused_with_what_to_do(tmp_path: Path, text: str,
                                                 message: str) -> None:
    path = write_config(tmp_path, text.replace("{dir}", str(tmp_path)))
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path)
    assert str(path) in caught.value.message


def test_without_regions_a_tenant_is_stored_as_before(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[governance.residency]\ntenants = { acme = ["eu"] }\n')
    settings = load_settings(path)
    assert settings.regions is None
    assert isinstance(open_store(settings), SQLiteStore)

"""``tether migrate``: an SQLite file with finished, running (its worker SIGKILLed mid-call),
timer-waiting and signal-waiting runs, plus audit chains and an approval, moves to PostgreSQL;
there the runs complete, and the audit chains still verify."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peers import drop_postgres_schema, postgres_schema_url, schema_for
from tether.errors import UsageError
from tether.runtime import owner_is_dead
from tether.runtime._owner import new_owner_id
from tether.store import Approval, Commit, LedgerEntry, NewRun, PostgresStore, SQLiteStore
from tether.store._common import AUDIT_GENESIS, chain_hash
from tether.store._transfer import migrate_sqlite_to_postgres
from tether.types import RunStatus

from .fleet_agents import PAUSE_ENV, signal_job
from .harness import Processes, child_env, wait_until
from .test_postgres_fleet import create_jobs, start_worker, tool_executions

pytestmark = pytest.mark.anyio


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[str]:
    schema = schema_for(tmp_path)
    yield postgres_schema_url(schema)
    drop_postgres_schema(schema)


def fingerprint(path: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-"
            for p in (path, Path(f"{path}-wal"))]


async def statuses(store: SQLiteStore | PostgresStore) -> dict[str, str]:
    return {run.run_id: str(run.status) for run in await store.list_runs(limit=100)}


def verify_chain(rows: list[tuple[int, str, str]]) -> bool:
    previous = AUDIT_GENESIS
    for expected_idx, (idx, body, digest) in enumerate(rows, start=1):
        previous = chain_hash(previous, body)
        if idx != expected_idx or digest != previous:
            return False
    return True


async def test_runs_in_every_state_move_to_postgres_and_complete_there(
        tmp_path: Path, processes: Processes, target: str) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    db_path = tmp_path / "tether.db"
    sqlite_url = f"sqlite:///{db_path}"
    env = child_env(log_dir)
    store = SQLiteStore(db_path, flush_interval_ms=5)
    await store.open()
    try:
        worker = await start_worker(processes, sqlite_url, {**env, PAUSE_ENV: "job-003"})
        await create_jobs(store, 4, nap_seconds=0)  # 000-002 finish, 003 stops in its tool
        await create_jobs(store, 2, nap_seconds=3, first=4)  # park on a timer
        await store.create_run(NewRun(
            run_id="sig-0", agent=signal_job.name, agent_version=signal_job.version,
            agent_ref=signal_job.ref, input=json.dumps({"name": "go"}), tenant="default",
            principal="default"), now_ms=0, owner=None, lease_ms=0)
        expected = {"job-000": "completed", "job-001": "completed", "job-002": "completed",
                    "job-003": "running", "job-004": "waiting", "job-005": "waiting",
                    "sig-0": "waiting"}

        async def settled_as_expected() -> bool:
            return (await statuses(store) == expected
                    and (log_dir / "paused-job-003").exists())
        await wait_until(settled_as_expected, what="runs in every state", child=worker)
        worker.kill()  # job-003 stays running, its tool call cut half-way

        for tenant, bodies in (("acme", ["a1", "a2", "a3"]), ("globex", ["g1"])):
            pending = store.append_audit(tenant, [json.dumps({"event": b}) for b in bodies],
                                         Commit.WAIT)
            assert pending is not None
            await pending
        assert await store.ledger_post("sig-0:cost", [
            LedgerEntry("tenant:default:cost:2026-11", 1_250_000, cap=5_000_000),
            LedgerEntry("run:sig-0:calls", 3)], now_ms=1)
        await store.request_approval(Approval(
            approval_id="sig-0:1", run_id="sig-0", seq=1, tenant="default",
            principal="default", agent="signal_job", tool="refund", args='{"amount": 900}',
            message=None, policies='["refund-needs-approval"]', status="pending",
            requested_at_ms=1, expires_at_ms=2**40))
    finally:
        await store.aclose()
    before = fingerprint(db_path)

    migrated = await processes.run_tether(sqlite_url, "migrate", "--from", sqlite_url,
                                          "--to", target, env=env)
    assert migrated.returncode == 0, migrated.describe()
    assert "migrated 7 runs (3 completed, 1 running, 3 waiting), " in migrated.stdout()
    assert "4 audit records; verified" in migrated.stdout()
    assert fingerprint(db_path) == before, "the source file was modified"

    pg = PostgresStore(target)
    await pg.open()
    try:
        assert await statuses(pg) == expected
        moved = await pg.get_run("job-003")
        assert moved is not None
        assert moved.owner is None  # released: any worker may take it
        assert [r.state for r in await pg.load_journal("job-003")] == ["started"]
        for tenant, count in (("acme", 3), ("globex", 1)):
            rows = await pg.load_audit(tenant)
            assert len(rows) == count
            assert verify_chain([(row.idx, row.body, row.hash) for row in rows]), tenant
        assert await pg.ledger_balances(["tenant:default:cost:2026-11", "run:sig-0:calls"]) == {
            "tenant:default:cost:2026-11": 1_250_000, "run:sig-0:calls": 3}
        # The post is remembered: the same post again changes nothing.
        assert not await pg.ledger_post("sig-0:cost", [LedgerEntry("run:sig-0:calls", 3)],
                                        now_ms=2)
        approval = await pg.get_approval("sig-0:1")
        assert approval is not None
        assert approval.status == "pending"

        # Workers on PostgreSQL finish what the file started.
        pg_worker = await start_worker(processes, target, env)
        signalled = await processes.run_tether(target, "signal", "sig-0", "go", "--data",
                                               '{"ok": true}', env=env)
        assert signalled.returncode == 0, signalled.describe()

        async def all_done() -> bool:
            return set((await statuses(pg)).values()) == {"completed"}
        await wait_until(all_done, what="every migrated run to complete", child=pg_worker,
                         timeout=60)
        sig = await pg.get_run("sig-0")
        assert sig is not None
        assert sig.result == {"signal": "go", "data": {"ok": True}}
        job3 = await pg.get_run("job-003")
        assert job3 is not None
        assert job3.status is RunStatus.COMPLETED
        # The call cut half-way on the file ran again on PostgreSQL (idempotent, same key);
        # the calls that had completed on the file never ran again.
        calls = tool_executions(log_dir)
        assert [c["pid"] for c in calls["job-003"]] == [worker.pid, pg_worker.pid]
        assert len({c["key"] for c in calls["job-003"]}) == 1
        for run_id in ("job-000", "job-001", "job-002"):
            assert [c["pid"] for c in calls[run_id]] == [worker.pid]
        assert pg_worker.terminate() == 0, pg_worker.describe()
    finally:
        await pg.aclose()

    again = await processes.run_tether(sqlite_url, "migrate", "--from", sqlite_url, "--to",
                                       target, env=env)
    assert again.returncode == 2
    assert "already has runs with the same ids" in again.stderr()


async def test_runs_held_by_a_live_worker_are_not_moved_without_force(
        tmp_path: Path, target: str) -> None:
    db_path = tmp_path / "tether.db"
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.create_run(NewRun(
            run_id="held", agent="a", agent_version="1", agent_ref="m:a", input="{}",
            tenant="default", principal="default"), now_ms=int(time.time() * 1000),
            owner=new_owner_id(), lease_ms=60_000)  # this process: alive
    finally:
        await store.aclose()
    now = int(time.time() * 1000)
    with pytest.raises(UsageError, match="held by live workers"):
        await migrate_sqlite_to_postgres(db_path, target, now_ms=now,
                                         owner_is_dead=owner_is_dead)
    report = await migrate_sqlite_to_postgres(db_path, target, now_ms=now,
                                              owner_is_dead=owner_is_dead, force=True)
    assert report.verified
    assert report.runs_by_status == {"running": 1}

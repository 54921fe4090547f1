"""Worker processes sharing one PostgreSQL database: SIGKILLed again and again, SIGSTOPped past
their lease, and the server itself restarted under them. Every run finishes once, and the
fencing records (``claims`` and the fence of each journal record) show that no run was ever
executed by two workers at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

from peers import drop_postgres_schema, executable, postgres_schema_url, schema_for
from tether.store import NewRun, PostgresStore, Store
from tether.types import RunStatus

from .fleet_agents import PAUSE_ENV, fleet_job
from .harness import Child, Processes, child_env, executions, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fleet_db(tmp_path: Path) -> AsyncIterator[tuple[str, PostgresStore]]:
    """A fresh schema, and a store on it for the test itself to create and inspect runs."""
    schema = schema_for(tmp_path)
    url = postgres_schema_url(schema)
    store = PostgresStore(url, flush_interval_ms=5)
    await store.open()
    try:
        yield url, store
    finally:
        await store.aclose()
        drop_postgres_schema(schema)


async def create_jobs(store: Store, count: int, nap_seconds: float, first: int = 0,
                      ) -> list[str]:
    run_ids = [f"job-{n:03d}" for n in range(first, first + count)]

    async def create(n: int, run_id: str) -> None:
        await store.create_run(NewRun(
            run_id=run_id, agent=fleet_job.name, agent_version=fleet_job.version,
            agent_ref=fleet_job.ref, input=json.dumps({"job": n, "nap_seconds": nap_seconds}),
            tenant="default", principal="default"), now_ms=0, owner=None, lease_ms=0)

    async with anyio.create_task_group() as group:  # concurrently: they share commits
        for n, run_id in enumerate(run_ids, start=first):
            group.start_soon(create, n, run_id)
    return run_ids


async def start_worker(processes: Processes, url: str, env: dict[str, str],
                       concurrency: int = 25) -> Child:
    worker = processes.tether(url, "worker", "--concurrency", str(concurrency), env=env)

    async def ready() -> bool:
        return "tether worker" in worker.stderr()
    await wait_until(ready, what="the worker to start", child=worker)
    return worker


async def all_completed(store: PostgresStore, count: int) -> bool:
    runs = await store.list_runs(limit=count + 1)
    return len(runs) == count and all(run.status is RunStatus.COMPLETED for run in runs)


def pid_of(owner: str) -> int:
    return int(owner.split(":")[1])  # host:pid:start:nonce


def tool_executions(log_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each run's executions of ``book_entry``, in the order they happened."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in executions(log_dir):
        if line["what"].startswith("tool:book_entry:"):
            by_run[line["run"]].append({**line, "nonce": line["what"].rsplit(":", 1)[1]})
    return by_run


async def check_runs(store: PostgresStore, log_dir: Path, run_ids: list[str],
                     killed: Iterable[int] | None) -> None:
    """Every run completed once, kept the result of the last execution of its tool, was
    re-executed only where a worker died (when ``killed`` names the dead), and every record
    was written under a claim whose holder is the process that produced it."""
    booked = tool_executions(log_dir)
    returned: dict[str, list[int]] = defaultdict(list)
    for line in executions(log_dir):
        if line["what"] == "agent:return":
            returned[line["run"]].append(line["pid"])
    for n, run_id in enumerate(run_ids):
        run = await store.get_run(run_id)
        assert run is not None, run_id
        assert run.status is RunStatus.COMPLETED, run
        assert isinstance(run.result, dict)
        assert (run.result["job"], run.result["summary"]) == (n, "job summarized")
        journal = await store.load_journal(run_id)
        assert [(r.seq, r.kind, r.state) for r in journal] == [
            (1, "tool", "ok"), (2, "sleep", "ok"), (3, "llm", "ok")]

        # The journal kept the last execution's result: nothing ran after a completed call.
        calls = booked[run_id]
        kept = json.loads(journal[0].value or "null")
        assert calls, run_id
        assert calls[-1]["nonce"] == kept["nonce"], (run_id, calls, kept)
        if killed is not None:
            # A call ran again only because the process running it died before its outcome.
            dead = set(killed)
            assert all(call["pid"] in dead for call in calls[:-1]), (run_id, calls, dead)
            assert all(pid in dead for pid in returned[run_id][:-1]), (run_id, returned[run_id])

        # Fencing records: claims hand out increasing fences; every record was written under
        # one of them, never under an older claim than the record before it, and the tool's
        # result under the claim of the process that produced it.
        claims = await store.claims(run_id)
        fences = [fence for fence, _, _ in claims]
        assert fences == sorted(set(fences)), claims
        owner_of = {fence: owner for fence, owner, _ in claims}
        written = await store.record_fences(run_id)
        assert all(fence in owner_of for _, fence in written), (claims, written)
        assert [f for _, f in written] == sorted(f for _, f in written), written
        assert pid_of(owner_of[written[0][1]]) == kept["pid"], (claims, written, kept)


async def test_three_workers_share_500_runs_while_one_is_killed_again_and_again(
        tmp_path: Path, processes: Processes, fleet_db: tuple[str, PostgresStore]) -> None:
    url, store = fleet_db
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    env = child_env(log_dir)
    workers = [await start_worker(processes, url, env) for _ in range(3)]
    run_ids = await create_jobs(store, 500, nap_seconds=0.05)
    killed: list[int] = []
    rng = random.Random(8)  # which worker dies next: not a secret
    with anyio.fail_after(180):
        while not await all_completed(store, len(run_ids)):
            await anyio.sleep(0.3)
            for worker in workers:
                assert worker.returncode is None, worker.describe()
            if len(killed) < 8:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()
                killed.append(victim.pid)
                workers.append(await start_worker(processes, url, env))
    for worker in workers:
        assert worker.terminate() == 0, worker.describe()

    await check_runs(store, tmp_path / "log", run_ids, killed)
    # The kills landed mid-run: some runs were taken over from a killed worker.
    taken_over = 0
    for run_id in run_ids:
        owners = [pid_of(owner) for _, owner, _ in await store.claims(run_id)]
        taken_over += any(pid in killed for pid in owners[:-1])
    assert taken_over > 0, "no run was taken over from a killed worker"


async def test_a_worker_stopped_past_its_lease_has_its_writes_refused_when_it_wakes(
        tmp_path: Path, processes: Processes, fleet_db: tuple[str, PostgresStore]) -> None:
    url, store = fleet_db
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    env = child_env(log_dir, TETHER_LEASE_SECONDS="1")
    stopped = await start_worker(processes, url, {**env, PAUSE_ENV: "job-000"})
    [run_id] = await create_jobs(store, 1, nap_seconds=0)

    async def paused() -> bool:
        return (log_dir / f"paused-{run_id}").exists()
    await wait_until(paused, what="the tool call to begin", child=stopped)
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        # Alive but silent: once its lease lapses another worker takes the run and ends it.
        other = await start_worker(processes, url, env)

        async def completed() -> bool:
            return await all_completed(store, 1)
        await wait_until(completed, what="the other worker to finish the run", child=other,
                         timeout=30)
        before = await store.record_fences(run_id)
    finally:
        (log_dir / "release").touch()
        os.kill(stopped.pid, signal.SIGCONT)

    # The stopped worker wakes inside its tool call and tries to record the outcome under
    # its old fence: refused, it abandons the run and carries on as a healthy worker.
    await anyio.sleep(1.5)
    assert stopped.returncode is None, stopped.describe()
    assert await store.record_fences(run_id) == before
    claims = await store.claims(run_id)
    assert [pid_of(owner) for _, owner, _ in claims] == [stopped.pid, other.pid]
    assert {fence for _, fence in before} == {claims[1][0]}, "every record is the new claim's"
    calls = tool_executions(log_dir)[run_id]
    assert [call["pid"] for call in calls] == [stopped.pid, other.pid]
    run = await store.get_run(run_id)
    assert run is not None
    assert isinstance(run.result, dict)
    entry = run.result["entry"]
    assert isinstance(entry, dict)
    assert entry["pid"] == other.pid
    for worker in (stopped, other):
        assert worker.terminate() == 0, worker.describe()


def restart_postgres() -> None:
    """Restart this machine's PostgreSQL cluster (what an operator's restart does)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run([executable("pg_ctlcluster"), "--skip-systemctl-redirect", version, "main",
                    "restart"], check=True, capture_output=True, timeout=60)


async def test_workers_carry_on_after_the_server_restarts_mid_run(
        tmp_path: Path, processes: Processes, fleet_db: tuple[str, PostgresStore]) -> None:
    if not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        pytest.skip("restarting the server needs this machine's own cluster and root")
    url, store = fleet_db
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    env = child_env(log_dir, TETHER_LEASE_SECONDS="5")
    workers = [await start_worker(processes, url, env, concurrency=20) for _ in range(2)]
    run_ids = await create_jobs(store, 120, nap_seconds=0.5)

    async def some_done() -> bool:
        runs = await store.list_runs(status=RunStatus.COMPLETED, limit=10)
        return len(runs) >= 10
    await wait_until(some_done, what="some runs to complete", timeout=60)
    await anyio.to_thread.run_sync(restart_postgres)

    async def done() -> bool:
        try:
            return await all_completed(store, len(run_ids))
        except Exception:  # noqa: BLE001 -- the test's own pool reconnects a moment later
            return False
    await wait_until(done, what="every run to complete after the restart", timeout=90)
    for worker in workers:
        assert worker.returncode is None, worker.describe()
        assert worker.terminate() == 0, worker.describe()
    # A call whose outcome could not be written while the server was down ran again (the
    # tool is idempotent, and gets the same key); a call whose outcome was written never did.
    await check_runs(store, log_dir, run_ids, killed=None)

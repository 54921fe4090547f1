"""SIGKILL a real worker process at each kind of point in a run, resume it elsewhere, and
check the promise: the same result as an uncrashed run, no step lost, no recorded effect
executed twice, and an uncertain side effect either retried under the same idempotency key
(idempotent tools) or left for a person (the others)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tether import Runtime
from tether.store import NewRun, Record, RecordState, SQLiteStore
from tether.types import JSON, Run, RunStatus

from .crash_agents import order_pipeline
from .harness import (
    Child,
    Processes,
    child_env,
    effect_names,
    execution_counts,
    executions,
    fast_settings,
    is_held,
    shape,
    wait_until,
)

pytestmark = pytest.mark.anyio

RUN_ID = "order-42"
ORDER = "A-42"
NAP_SECONDS = 0.3
APPROVAL: JSON = {"approved_by": "ops", "ticket": 7}
ENDED_OR_NEEDS_ATTENTION = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                  RunStatus.NEEDS_ATTENTION)
FINAL = (RecordState.OK, RecordState.ERROR)


@dataclass(frozen=True)
class Reference:
    """The same run, never crashed: what every crashed run must end up equal to."""

    result: Any
    journal: list[Record]

    def value(self, seq: int) -> Any:
        return json.loads(self.journal[seq - 1].value or "null")


async def _reference_run(directory: Path) -> Reference:
    async with Runtime(settings=fast_settings(f"sqlite:///{directory / 'reference.db'}")) as rt:
        handle = await rt.start(order_pipeline, {"order": ORDER, "nap_seconds": NAP_SECONDS},
                                run_id=RUN_ID)
        await rt.signal(RUN_ID, "approval", APPROVAL)
        with anyio.fail_after(30):
            result = await handle.result()
        journal = await rt.journal(RUN_ID)
    counts = execution_counts(directory)
    assert counts == dict.fromkeys(effect_names(journal).values(), 1)
    return Reference(result, journal)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    directory = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2E_DIR", str(directory))
        return anyio.run(_reference_run, directory)


@dataclass(frozen=True)
class Crash:
    """What the store and the execution log held right after the SIGKILL."""

    worker: Child
    run: Run
    records: list[Record]
    counts: Counter[str]

    @property
    def states(self) -> dict[int, str]:
        return {r.seq: r.state for r in self.records}


class CrashLab:
    """One SQLite file, one run of ``order_pipeline``, and the processes that work on it."""

    def __init__(self, directory: Path, processes: Processes, store: SQLiteStore) -> None:
        self.db_url = f"sqlite:///{directory / 'tether.db'}"
        self.log_dir = directory / "log"
        self.processes = processes
        self.store = store

    async def create_run(self, *, nap_seconds: float = NAP_SECONDS, approve: bool = True,
                         ) -> None:
        """Create the run unclaimed (a worker process picks it up), approval sent up front."""
        await self.store.create_run(NewRun(
            run_id=RUN_ID, agent=order_pipeline.name, agent_version=order_pipeline.version,
            agent_ref=order_pipeline.ref,
            input=json.dumps({"order": ORDER, "nap_seconds": nap_seconds}),
            tenant="default", principal="default"), now_ms=0, owner=None, lease_ms=0)
        if approve:
            await self.store.send_signal(RUN_ID, "approval", json.dumps(APPROVAL), now_ms=0)

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(self.log_dir, **extra)

    def start_worker(self, **extra_env: str) -> Child:
        return self.processes.tether(self.db_url, "worker", env=self.env(**extra_env))

    async def tether(self, *args: str) -> Child:
        """Run a ``tether`` command to its end; it must exit 0."""
        child = await self.processes.run_tether(self.db_url, *args, env=self.env())
        assert child.returncode == 0, child.describe()
        return child

    async def run(self) -> Run:
        run = await self.store.get_run(RUN_ID)
        assert run is not None
        return run

    async def states(self) -> dict[int, str]:
        return {r.seq: r.state for r in await self.store.load_journal(RUN_ID)}

    def held(self, point: str) -> bool:
        return is_held(self.log_dir, point)

    async def crash(self, worker: Child, until: Callable[[], Awaitable[bool]], what: str,
                    ) -> Crash:
        """Wait until ``until()`` holds, then SIGKILL the worker and reap it."""
        await wait_until(until, what=what, child=worker)
        worker.kill()
        return Crash(worker, await self.run(), await self.store.load_journal(RUN_ID),
                     execution_counts(self.log_dir))

    async def resume_in_process(self) -> Run:
        """A fresh in-process worker on the same file drives the run until it stops."""
        async with Runtime(settings=fast_settings(self.db_url), worker=True):
            return await self.settled()

    async def resume_in_worker_process(self) -> Run:
        """A fresh ``tether worker`` process drives the run; then it is stopped with SIGTERM."""
        worker = self.start_worker()
        run = await self.settled(worker)
        assert worker.terminate() == 0, worker.describe()
        return run

    async def settled(self, worker: Child | None = None) -> Run:
        async def done() -> bool:
            return (await self.run()).status in ENDED_OR_NEEDS_ATTENTION
        await wait_until(done, what="the run to end or need attention", child=worker)
        return await self.run()

    async def check_recovered(self, crash: Crash, reference: Reference) -> Counter[str]:
        """The promise, for any crash point; returns the execution counts for more checks."""
        final = await self.run()
        journal = await self.store.load_journal(RUN_ID)
        assert final.status is RunStatus.COMPLETED, final.error
        assert final.result == reference.result
        # No step lost: seqs are contiguous and the same effects as the uncrashed run.
        assert [r.seq for r in journal] == list(range(1, len(journal) + 1))
        assert shape(journal) == shape(reference.journal)
        names = effect_names(journal)
        for record, expected in zip(journal, reference.journal, strict=True):
            if record.seq in names:
                assert record.value == expected.value, f"seq {record.seq} ({names[record.seq]})"
        # What was on record before the crash stands, and was never executed again.
        counts = execution_counts(self.log_dir)
        for before in crash.records:
            if before.state in FINAL:
                after = journal[before.seq - 1]
                assert (after.state, after.value) == (before.state, before.value)
                if before.seq in names:
                    assert counts[names[before.seq]] == 1, (
                        f"{names[before.seq]} was recorded before the crash yet ran again")
        assert all(counts[name] >= 1 for name in names.values())
        return counts


@pytest.fixture
async def lab(tmp_path: Path, processes: Processes,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CrashLab]:
    (tmp_path / "log").mkdir()
    monkeypatch.setenv("E2E_DIR", str(tmp_path / "log"))  # for in-process resumes
    store = SQLiteStore(tmp_path / "tether.db", flush_interval_ms=5)
    await store.open()
    try:
        yield CrashLab(tmp_path, processes, store)
    finally:
        await store.aclose()


async def test_crash_before_a_side_effect_intent_charges_exactly_once(
        lab: CrashLab, reference: Reference) -> None:
    """Killed in the step before the charge: nothing of the charge is on record or done."""
    await lab.create_run()
    worker = lab.start_worker(E2E_HOLD="price")

    async def in_price_step() -> bool:
        return lab.held("price") and (await lab.states()).get(2) == RecordState.OK

    crash = await lab.crash(worker, in_price_step, "the price step, model reply on record")
    assert crash.run.status is RunStatus.RUNNING
    assert crash.states == {1: "ok", 2: "ok"}
    assert crash.counts["tool:charge_card"] == 0

    await lab.resume_in_process()
    counts = await lab.check_recovered(crash, reference)
    assert counts["step:price"] == 2  # in flight at the crash, never recorded: run again
    assert counts["tool:charge_card"] == 1
    assert counts["tool:ship_order"] == 1


async def test_idempotent_tool_cut_between_intent_and_outcome_is_retried_with_the_same_key(
        lab: CrashLab, reference: Reference) -> None:
    await lab.create_run()
    worker = lab.start_worker(E2E_HOLD="charge_card")

    async def inside_charge() -> bool:
        return lab.held("charge_card") and (await lab.states()).get(4) == RecordState.STARTED

    crash = await lab.crash(worker, inside_charge, "the worker to be inside charge_card")
    assert crash.states == {1: "ok", 2: "ok", 3: "ok", 4: "started"}

    await lab.resume_in_worker_process()
    counts = await lab.check_recovered(crash, reference)
    charges = [e for e in executions(lab.log_dir) if e["what"] == "tool:charge_card"]
    assert [(c["key"], c["attempt"]) for c in charges] == [(f"{RUN_ID}:4", 1),
                                                          (f"{RUN_ID}:4", 2)]
    assert charges[0]["pid"] == crash.worker.pid != charges[1]["pid"]
    assert counts["tool:ship_order"] == 1
    assert (await lab.store.load_journal(RUN_ID))[3].attempts == 2


async def _crash_inside_ship_order(lab: CrashLab) -> Crash:
    """Kill the worker inside the non-idempotent tool; a new worker must not call it again."""
    await lab.create_run()
    worker = lab.start_worker(E2E_HOLD="ship_order")

    async def inside_ship() -> bool:
        return lab.held("ship_order") and (await lab.states()).get(5) == RecordState.STARTED

    crash = await lab.crash(worker, inside_ship, "the worker to be inside ship_order")
    assert crash.states == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "started"}
    assert crash.counts["tool:ship_order"] == 1

    run = await lab.resume_in_process()
    assert run.status is RunStatus.NEEDS_ATTENTION
    assert run.error is not None
    assert (run.error["code"], run.error["seq"], run.error["name"]) == (
        "journal.uncertain", 5, "ship_order")
    assert execution_counts(lab.log_dir)["tool:ship_order"] == 1  # never silently repeated
    assert (await lab.states())[5] == RecordState.STARTED
    return crash


async def test_non_idempotent_tool_cut_mid_call_needs_attention_and_skip_completes_the_run(
        lab: CrashLab, reference: Reference) -> None:
    """The operator checks the carrier, finds the parcel shipped, and records its outcome."""
    crash = await _crash_inside_ship_order(lab)
    shipped = reference.value(5)

    resolved = await lab.tether("resolve", RUN_ID, "--skip-with", json.dumps(shipped))
    assert "pending" in resolved.stdout()
    await lab.resume_in_process()

    counts = await lab.check_recovered(crash, reference)
    assert counts["tool:ship_order"] == 1
    record = (await lab.store.load_journal(RUN_ID))[4]
    assert json.loads(record.value or "null") == shipped
    assert json.loads(record.detail or "{}")["resolution"] == "skip"


async def test_non_idempotent_tool_cut_mid_call_is_called_once_more_on_resolve_retry(
        lab: CrashLab, reference: Reference) -> None:
    crash = await _crash_inside_ship_order(lab)

    await lab.tether("resolve", RUN_ID, "--retry")
    await lab.resume_in_process()

    counts = await lab.check_recovered(crash, reference)
    ships = [e for e in executions(lab.log_dir) if e["what"] == "tool:ship_order"]
    assert [s["key"] for s in ships] == [f"{RUN_ID}:5"] * 2
    assert counts["tool:charge_card"] == 1


async def test_crash_right_after_an_outcome_never_repeats_that_side_effect(
        lab: CrashLab, reference: Reference) -> None:
    """Killed in the step after ship_order: its outcome is on record, so no attention needed."""
    await lab.create_run()
    worker = lab.start_worker(E2E_HOLD="receipt")

    async def after_shipping() -> bool:
        return lab.held("receipt") and (await lab.states()).get(5) == RecordState.OK

    crash = await lab.crash(worker, after_shipping, "ship_order's outcome to be on record")
    assert crash.states == dict.fromkeys(range(1, 6), "ok")

    run = await lab.resume_in_worker_process()
    assert (run.status, run.error) == (RunStatus.COMPLETED, None)
    counts = await lab.check_recovered(crash, reference)
    assert counts["tool:ship_order"] == counts["tool:charge_card"] == 1
    assert counts["step:receipt"] == 2


async def test_crash_during_a_model_call_calls_only_that_model_call_again(
        lab: CrashLab, reference: Reference) -> None:
    """The second model call takes a minute (scripted latency); the worker dies in it."""
    await lab.create_run()
    worker = lab.start_worker(E2E_SLOW_CALL="1", E2E_MODEL_LATENCY="60")

    async def in_second_model_call() -> bool:
        return (execution_counts(lab.log_dir)["llm:1"] == 1
                and (await lab.states()).get(8) == RecordState.OK)

    crash = await lab.crash(worker, in_second_model_call, "the second model call")
    assert crash.states == dict.fromkeys(range(1, 9), "ok")

    await lab.resume_in_process()
    counts = await lab.check_recovered(crash, reference)
    assert counts["llm:0"] == 1
    assert counts["llm:1"] == 2


async def test_a_parked_timer_survives_the_crash_and_keeps_its_deadline(
        lab: CrashLab, reference: Reference) -> None:
    nap = 1.5
    await lab.create_run(nap_seconds=nap)
    worker = lab.start_worker()

    async def parked() -> bool:
        run = await lab.run()
        return run.status is RunStatus.WAITING and run.wake_at_ms is not None

    crash = await lab.crash(worker, parked, "the run to park on its timer")
    assert crash.states == {**dict.fromkeys(range(1, 7), "ok"), 7: "started"}
    wake_at_ms = json.loads(crash.records[6].value or "{}")["wake_at_ms"]
    assert crash.run.wake_at_ms == wake_at_ms
    assert crash.run.owner is None  # a parked run belongs to nobody: no takeover needed

    await lab.resume_in_worker_process()
    counts = await lab.check_recovered(crash, reference)
    assert counts["llm:1"] == 1
    slept = (await lab.store.load_journal(RUN_ID))[6]
    assert json.loads(slept.value or "{}")["wake_at_ms"] == wake_at_ms
    assert slept.finished_at_ms is not None
    # Woken at the deadline set before the crash, not a whole nap after the new worker came.
    assert wake_at_ms <= slept.finished_at_ms < wake_at_ms + 1000


async def test_a_run_waiting_for_a_signal_survives_the_crash_and_resumes_when_signalled(
        lab: CrashLab, reference: Reference) -> None:
    await lab.create_run(approve=False)
    worker = lab.start_worker()

    async def waiting_for_approval() -> bool:
        run = await lab.run()
        return run.status is RunStatus.WAITING and run.waiting_for == "approval"

    crash = await lab.crash(worker, waiting_for_approval, "the run to wait for approval")
    assert crash.states == {**dict.fromkeys(range(1, 8), "ok"), 8: "started"}

    # Nothing to do until the signal comes: a worker finds nothing runnable and leaves it be.
    await lab.tether("worker", "--once")
    assert (await lab.run()).status is RunStatus.WAITING
    assert execution_counts(lab.log_dir) == crash.counts

    await lab.tether("signal", RUN_ID, "approval", "--data", json.dumps(APPROVAL))
    await lab.tether("worker", "--once")
    counts = await lab.check_recovered(crash, reference)
    assert counts["llm:1"] == 1

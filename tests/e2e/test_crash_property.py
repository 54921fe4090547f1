"""Property: whatever the program and wherever its worker is SIGKILLed, resuming it gives the
result an uncrashed run gives, and no effect recorded before the crash runs again."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings

from tether import Runtime
from tether.store import NewRun, Record, RecordState, SQLiteStore
from tether.types import RunStatus

from .crash_agents import program_agent
from .harness import (
    Processes,
    child_env,
    execution_counts,
    executions,
    fast_settings,
    is_held,
    shape,
    wait_until,
)
from .strategies import CrashPlan, crash_plans

RUN_ID = "program-1"


@contextmanager
def log_dir_env(directory: Path) -> Iterator[None]:
    """Point in-process executions at ``directory`` (hypothesis examples share one test
    call, so the monkeypatch fixture cannot do this per example)."""
    before = os.environ.get("E2E_DIR")
    os.environ["E2E_DIR"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            del os.environ["E2E_DIR"]
        else:
            os.environ["E2E_DIR"] = before


def execution_name(program: tuple[str, ...], index: int) -> str | None:
    """What ``crash_agents`` logs when op ``index`` of ``program`` really executes."""
    op = program[index]
    if op == "llm":
        return f"llm:{program[:index].count('llm')}"
    return {"read": f"tool:lookup@{index}", "write": f"tool:upsert@{index}",
            "step": f"step:compute@{index}"}.get(op)


def without_clock(result: list[Any]) -> list[Any]:
    return [{"now": "<clock>"} if isinstance(item, dict) and "now" in item else item
            for item in result]


async def uncrashed(program: tuple[str, ...], directory: Path) -> tuple[Any, list[Record]]:
    with log_dir_env(directory):
        async with Runtime(settings=fast_settings("memory://")) as rt:
            handle = await rt.start(program_agent, {"program": list(program)}, run_id=RUN_ID)
            with anyio.fail_after(30):
                result = await handle.result()
            journal = await rt.journal(RUN_ID)
    assert sorted(execution_counts(directory).elements()) == sorted(
        name for i in range(len(program)) if (name := execution_name(program, i)))
    return result, journal


async def check_crash_plan(plan: CrashPlan, directory: Path) -> None:
    reference_dir, log_dir = directory / "reference", directory / "crashed"
    reference_dir.mkdir()
    log_dir.mkdir()
    expected, expected_journal = await uncrashed(plan.program, reference_dir)

    db_path = directory / "tether.db"
    store = SQLiteStore(db_path, flush_interval_ms=5)
    await store.open()
    try:
        await store.create_run(NewRun(
            run_id=RUN_ID, agent=program_agent.name, agent_version=program_agent.version,
            agent_ref=program_agent.ref, input=json.dumps({"program": list(plan.program)}),
            tenant="default", principal="default"), now_ms=0, owner=None, lease_ms=0)

        # Run it in a worker process and SIGKILL that at the plan's point.
        with Processes(directory) as processes:
            worker = processes.tether(f"sqlite:///{db_path}", "worker",
                                      env=child_env(log_dir, E2E_HOLD=plan.hold_point))

            # Every earlier effect's outcome on record (a side effect's is committed soon
            # after the call, not waited for) and the worker blocked at the hold point.
            states_at_crash = [RecordState.OK] * plan.at + [RecordState.STARTED] * (
                plan.records_at_crash - plan.at)

            async def at_crash_point() -> bool:
                return is_held(log_dir, plan.hold_point) and states_at_crash == [
                    r.state for r in await store.load_journal(RUN_ID)]

            await wait_until(at_crash_point, what=f"hold point {plan.hold_point}", child=worker)
            worker.kill()
        before = await store.load_journal(RUN_ID)
        counts_before = execution_counts(log_dir)
        assert [r.state for r in before] == states_at_crash

        # Resume in a fresh in-process worker.
        with log_dir_env(log_dir):
            async with Runtime(settings=fast_settings(f"sqlite:///{db_path}"), worker=True) as rt:
                with anyio.fail_after(30):
                    result = await rt.handle(RUN_ID).result()
        run = await store.get_run(RUN_ID)
        journal = await store.load_journal(RUN_ID)
    finally:
        await store.aclose()

    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert isinstance(result, list)
    assert without_clock(result) == without_clock(expected)
    assert [r.seq for r in journal] == list(range(1, len(plan.program) + 1))
    assert shape(journal) == shape(expected_journal)
    # What was on record before the crash, clock reads included, stands unchanged.
    for earlier in before:
        if earlier.state == RecordState.OK:
            later = journal[earlier.seq - 1]
            assert (later.state, later.value) == (earlier.state, earlier.value)
    # ctx.now answers from the journal: the result holds the recorded times.
    for index, op in enumerate(plan.program):
        if op == "now":
            millis = int(journal[index].value or "0")
            read = result[index]
            assert isinstance(read, dict)
            assert read["now"] == datetime.datetime.fromtimestamp(
                millis / 1000, tz=datetime.UTC).isoformat()

    # Every effect executed once, except the one the crash cut short, which ran once more
    # (an idempotent tool: with the same key); effects on record before the crash never again.
    counts = execution_counts(log_dir)
    wanted = {name: 2 if plan.inside and index == plan.at else 1
              for index in range(len(plan.program))
              if (name := execution_name(plan.program, index))}
    assert dict(counts) == wanted
    for name, count in counts_before.items():
        assert count == 1, f"{name} ran {count} times before the crash"
    if plan.inside and plan.program[plan.at] == "write":
        keys = [e["key"] for e in executions(log_dir) if e["what"] == f"tool:upsert@{plan.at}"]
        assert keys == [f"{RUN_ID}:{plan.at + 1}"] * 2


def check(plan: CrashPlan) -> None:
    with tempfile.TemporaryDirectory(prefix="tether-e2e-") as directory:
        anyio.run(check_crash_plan, plan, Path(directory))


@settings(max_examples=8)
@given(plan=crash_plans())
def test_a_random_program_killed_anywhere_resumes_to_the_uncrashed_result(
        plan: CrashPlan) -> None:
    check(plan)


@pytest.mark.slow
@settings(max_examples=80)
@given(plan=crash_plans())
def test_many_random_programs_killed_anywhere_resume_to_the_uncrashed_result(
        plan: CrashPlan) -> None:
    check(plan)

"""Two ``tether worker`` processes on one SQLite file share the runs in it: each run
completes exactly once, and no run is ever executed by two workers at the same time."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tether.store import NewRun, SQLiteStore
from tether.types import RunStatus

from .crash_agents import INTERVALS, shared_job
from .harness import Child, Processes, child_env, executions, read_lines, wait_until

pytestmark = pytest.mark.anyio

RUNS = 40
NAP_SECONDS = 0.3  # every run parks once, so it may wake up on the other worker

async def test_two_workers_on_one_file_run_each_run_once_and_never_together(
        tmp_path: Path, processes: Processes) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    db_path = tmp_path / "tether.db"
    store = SQLiteStore(db_path, flush_interval_ms=5)
    await store.open()
    try:
        # Both workers are up before the runs exist, so they compete for them from the start;
        # a few runs at a time each, so neither can take the whole queue at once.
        env = child_env(log_dir)
        workers = [processes.tether(f"sqlite:///{db_path}", "worker", "--concurrency", "4",
                                    env=env) for _ in range(2)]
        for worker in workers:
            async def ready(worker: Child = worker) -> bool:
                return "tether worker" in worker.stderr()
            await wait_until(ready, what="the worker to start", child=worker)

        run_ids = [f"job-{n:02d}" for n in range(RUNS)]
        for n, run_id in enumerate(run_ids):
            await store.create_run(NewRun(
                run_id=run_id, agent=shared_job.name, agent_version=shared_job.version,
                agent_ref=shared_job.ref, input=json.dumps({"job": n, "nap_seconds": NAP_SECONDS}),
                tenant="default", principal="default"), now_ms=0, owner=None, lease_ms=0)

        async def all_completed() -> bool:
            for worker in workers:
                assert worker.returncode is None, worker.describe()
            runs = await store.list_runs(limit=RUNS + 1)
            return len(runs) == RUNS and all(r.status is RunStatus.COMPLETED for r in runs)

        await wait_until(all_completed, what=f"{RUNS} runs to complete", timeout=90)
        for worker in workers:
            assert worker.terminate() == 0, worker.describe()

        for n, run_id in enumerate(run_ids):
            run = await store.get_run(run_id)
            assert run is not None
            assert run.result == {"job": n, "entry": {"job": n, "entry": f"E-{n}"},
                                  "summary": "job summarized"}
            journal = await store.load_journal(run_id)
            assert [(r.seq, r.kind, r.state) for r in journal] == [
                (1, "tool", "ok"), (2, "sleep", "ok"), (3, "llm", "ok")]
    finally:
        await store.aclose()

    # Each run's side effect, model call and final return happened exactly once in all.
    done = Counter((line["what"], line["run"]) for line in executions(log_dir))
    for run_id in run_ids:
        for what in ("tool:post_entry", "llm:0", "agent:return"):
            assert done[what, run_id] == 1, f"{what} of {run_id} ran {done[what, run_id]} times"
    assert sum(done.values()) == 3 * RUNS

    # No two executions of one run overlap in time, whichever processes they were in.
    intervals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in read_lines(log_dir / INTERVALS):
        intervals[line["run"]].append(line)
    assert sorted(intervals) == run_ids
    for run_id, spans in intervals.items():
        spans.sort(key=lambda span: span["start"])
        for earlier, later in itertools.pairwise(spans):
            assert later["start"] >= earlier["end"], f"{run_id} ran twice at once: {spans}"
    worker_pids = {worker.pid for worker in workers}
    pids = {span["pid"] for spans in intervals.values() for span in spans}
    assert pids == worker_pids, "both workers should have taken part"
    moved = [run_id for run_id, spans in intervals.items() if len({s["pid"] for s in spans}) > 1]
    assert moved, "no run woke up on the other worker; the test proved less than it should"

"""B3: recovery after a crash. 1,000 runs of a multi-step agent (default 10 steps of
``ctx.llm`` with 10 ms latency + a read-only tool, then one idempotent side-effecting tool)
are created pending in a SQLite file; a worker process (``python -m tether --db URL worker``)
executes them and is killed with SIGKILL when about half of all journal records are
committed. A new ``worker --once`` is then started; measured is the time from its start until
every run is completed (polled in the database every 10 ms), and until the worker has exited.

Each repetition uses a fresh database. The killed worker's model answers in 100 ms, so that
the kill lands near half the records; the recovering worker's answers in 10 ms. The baseline,
measured in the same repetition, is ``worker --once`` on a database with nothing to do:
process start, imports, opening the store and shutting down. The ratio says how much longer
than that fixed cost recovery takes.

Target: <= 2 s from the new worker's start until all 1,000 runs are completed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench_agents import create_pending, recovery, recovery_records
from bench_common import (
    base_parser,
    bench_env,
    emit,
    kill_group,
    log,
    paired_ratio,
    sqlite_url,
    work_dir,
)

BENCH = "b3_recovery"
TARGET = "<= 2"
POLL_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Recovery:
    killed_at_records: int
    completed_before_kill: int
    until_completed_seconds: float
    until_exit_seconds: float


def create_runs(db: Path, runs: int, steps: int) -> None:
    anyio.run(create_pending, sqlite_url(db), recovery, {"steps": steps}, runs)


def worker(db: Path, latency: float, *extra: str) -> subprocess.Popen[bytes]:
    """A worker process whose model answers in ``latency`` seconds; its stderr goes to DB.log
    (a pipe nobody reads could fill up and block it)."""
    with (db.parent / (db.name + ".log")).open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "tether", "--db", sqlite_url(db), "worker", *extra],
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=db.parent, start_new_session=True,
            env=bench_env(BENCH_RECOVERY_LATENCY=str(latency)))


def worker_log(db: Path) -> str:
    path = db.parent / (db.name + ".log")
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def count(conn: sqlite3.Connection, sql: str) -> int:
    while True:
        try:
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError as exc:  # the schema may not exist yet
            if "no such table" not in str(exc) and "locked" not in str(exc):
                raise
            time.sleep(POLL_SECONDS)


FINAL_RECORDS = "SELECT count(*) FROM journal WHERE state != 'started'"
COMPLETED = "SELECT count(*) FROM runs WHERE status = 'completed'"
UNSETTLED = "SELECT count(*) FROM runs WHERE status != 'completed'"


def one_repetition(db: Path, args: argparse.Namespace) -> Recovery:
    runs: int = args.runs
    steps: int = args.steps
    timeout: float = args.timeout
    create_runs(db, runs, steps)
    half = runs * recovery_records(steps) // 2
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        first = worker(db, args.first_latency)
        try:
            deadline = time.monotonic() + timeout
            while count(conn, FINAL_RECORDS) < half:
                if first.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the first worker ended or stalled before half the "
                                       "records were journaled: " + worker_log(db))
                time.sleep(POLL_SECONDS / 2)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)  # reap it: a dead owner is taken over at once
        finally:
            kill_group(first)
        killed_at = count(conn, FINAL_RECORDS)
        completed_before = count(conn, COMPLETED)
        started = time.perf_counter()
        second = worker(db, args.latency, "--once")
        try:
            deadline = time.monotonic() + timeout
            while count(conn, COMPLETED) < runs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"recovery did not finish in {timeout} s")
                if second.poll() is not None and count(conn, COMPLETED) < runs:
                    raise RuntimeError(
                        f"the recovering worker exited with {second.returncode} but only "
                        f"{count(conn, COMPLETED)}/{runs} runs are completed "
                        f"({count(conn, UNSETTLED)} are not): " + worker_log(db))
                time.sleep(POLL_SECONDS)
            until_completed = time.perf_counter() - started
            second.wait(timeout=timeout)
            until_exit = time.perf_counter() - started
        finally:
            kill_group(second)
        if second.returncode != 0:
            raise RuntimeError(f"the recovering worker exited with {second.returncode}: "
                               + worker_log(db))
    finally:
        conn.close()
    return Recovery(killed_at, completed_before, until_completed, until_exit)


def empty_worker(db: Path, timeout: float) -> float:
    """Seconds a `worker --once` takes when there is nothing to do (the fixed cost)."""
    started = time.perf_counter()
    process = worker(db, 0.0, "--once")
    try:
        process.wait(timeout=timeout)
    finally:
        kill_group(process)
    if process.returncode != 0:
        raise RuntimeError(f"the empty worker exited with {process.returncode}")
    return time.perf_counter() - started


def remove_db(db: Path) -> None:
    for path in db.parent.glob(db.name + "*"):
        path.unlink()


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B3")
    parser.add_argument("--runs", type=int, default=1000, help="runs (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="steps per run (default 10)")
    parser.add_argument("--latency", type=float, default=0.01,
                        help="model latency in seconds for the recovering worker (default 0.01)")
    parser.add_argument("--first-latency", type=float, default=0.1,
                        help="model latency for the worker that is killed (default 0.1: slow "
                             "enough that the kill lands near half the records)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="give up on a worker after this many seconds (default 300)")
    args = parser.parse_args()
    records = recovery_records(args.steps)
    results: list[Recovery] = []
    empties: list[float] = []
    with work_dir(args.dir) as directory:
        for rep in range(args.reps):
            log(f"b3: repetition {rep + 1}/{args.reps}")
            empty_db = directory / f"b3-empty-{rep}.db"
            create_runs(empty_db, 0, args.steps)
            empties.append(empty_worker(empty_db, args.timeout))
            remove_db(empty_db)
            db = directory / f"b3-{rep}.db"
            results.append(one_repetition(db, args))
            remove_db(db)
    killed = statistics.median(r.killed_at_records for r in results)
    context = {
        "runs": args.runs, "steps": args.steps,
        "model_latency_ms": args.latency * 1000,
        "first_worker_latency_ms": args.first_latency * 1000,
        "records_total": args.runs * records,
        "records_at_kill_median": killed,
        "fraction_at_kill_median": round(killed / (args.runs * records), 3),
        "completed_before_kill_max": max(r.completed_before_kill for r in results),
    }
    emit(BENCH, "worker-once-empty", "wall_seconds", "s", empties,
         note="baseline: `worker --once` with nothing to do (start, open, exit)")
    emit(BENCH, f"{args.runs}-runs", "until_completed_seconds", "s",
         [r.until_completed_seconds for r in results], target=TARGET,
         ratio=paired_ratio([r.until_completed_seconds for r in results], empties),
         ratio_to="worker-once-empty",
         note="new worker's start to all runs completed", **context)
    emit(BENCH, f"{args.runs}-runs", "until_exit_seconds", "s",
         [r.until_exit_seconds for r in results],
         ratio=paired_ratio([r.until_exit_seconds for r in results], empties),
         ratio_to="worker-once-empty", note="new worker's start to its exit")


if __name__ == "__main__":
    main()

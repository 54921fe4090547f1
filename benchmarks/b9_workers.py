"""B9: workers on PostgreSQL. N runs (default 2,000) of a 5-step agent (each step one
``ctx.llm`` on a ``ScriptedModel`` with no latency and one side-effecting tool call, so every
step waits for a durable intent) are created pending; K ``tether worker`` processes (1, 2 and 4)
on one PostgreSQL schema execute them. The same workload on an SQLite file with one worker
(the embedded default, power durability) is measured in the same repetition.

Reported per case: runs per second (from the workers' start to the last completion), the
workers' CPU per step (user + system of every worker process, read from /proc just before they
stop) and, on PostgreSQL, the server's CPU per step (every backend the workers connected, by
application name). Ratio: PostgreSQL runs/s over SQLite's, same repetition.

PostgreSQL runs on the same 2-core machine as the workers, so more workers compete with the
server for the same cores: the figures show coordination overhead, not a cluster's scaling.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psycopg

from bench_agents import create_pending, steps_async_write
from bench_common import base_parser, bench_env, emit, kill_group, log, sqlite_url, work_dir

BENCH = "b9_workers"
POLL_SECONDS = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (fields 14 and 15 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def completed(url: str, schema: str | None) -> int:
    if schema is None:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'")
                       .fetchone()[0])
    with psycopg.connect(url.split("?")[0], options=f"-c search_path={schema}") as conn:
        row = conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()
        return int(row[0]) if row else 0


def server_pids(base: str, schema: str) -> list[int]:
    """The server processes serving the workers' connections (named after the schema)."""
    with psycopg.connect(base) as conn:
        return [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"tether-%:{schema}",))]


def start_workers(url: str, workers: int, directory: Path) -> list[subprocess.Popen[bytes]]:
    """Start the workers and wait until each has opened the store (imports and start-up are
    not part of what is measured)."""
    env = bench_env(TETHER_POLL_INTERVAL_SECONDS=str(POLL_SECONDS))
    procs, logs = [], []
    for n in range(workers):
        log_path = directory / f"worker-{n}.err"
        with log_path.open("wb") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tether", "--db", url, "worker", "--concurrency", "500"],
                env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True))
        logs.append(log_path)
    deadline = time.monotonic() + 60
    while not all(b"tether worker" in path.read_bytes() for path in logs):
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
            raise RuntimeError("a worker did not start: " + " / ".join(
                path.read_text(errors="replace")[-500:] for path in logs))
        time.sleep(POLL_SECONDS)
    return procs


def run_case(url: str, schema: str | None, workers: int, runs: int, steps: int,
             directory: Path) -> tuple[float, float, float | None]:
    """(runs per second, worker CPU µs per step, server CPU µs per step or None), from the
    moment the runs are submitted to the last completion."""
    procs = start_workers(url, workers, directory)
    try:
        worker_base = sum(cpu_seconds(proc.pid) for proc in procs)
        backends = [] if schema is None else server_pids(url.split("?")[0], schema)
        server_base = sum(cpu_seconds(pid) for pid in backends)
        started = time.perf_counter()
        anyio.run(create_pending, url, steps_async_write, {"steps": steps}, runs)
        while completed(url, schema) < runs:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}")
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        # Read before the workers stop: their server backends end with their connections.
        worker_cpu = sum(cpu_seconds(proc.pid) for proc in procs) - worker_base
        total_steps = runs * steps
        if schema is None:
            return runs / wall, worker_cpu * 1e6 / total_steps, None
        backends = server_pids(url.split("?")[0], schema)
        server_cpu = sum(cpu_seconds(pid) for pid in backends) - server_base
        return runs / wall, worker_cpu * 1e6 / total_steps, server_cpu * 1e6 / total_steps
    finally:
        for proc in procs:
            kill_group(proc)


def drop(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B9")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4], help="PostgreSQL worker counts (default 1,2,4)")
    parser.add_argument("--postgres", default=os.environ.get("TETHER_BENCH_POSTGRES_URL",
                                                             DEFAULT_PG))
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float | None]]] = {}
    sqlite_rates: list[float] = []
    with work_dir(args.dir) as directory:
        for rep in range(args.reps):
            log(f"b9: repetition {rep + 1}/{args.reps}: sqlite, 1 worker")
            db = directory / f"rep{rep}.db"
            sqlite_case = run_case(sqlite_url(db), None, 1, args.runs, args.steps, directory)
            sqlite_rates.append(sqlite_case[0])
            results.setdefault("sqlite/1 worker", []).append(sqlite_case)
            for workers in args.workers:
                schema = f"bench_b9_{os.getpid()}_{rep}_{workers}"
                log(f"b9: repetition {rep + 1}/{args.reps}: postgres, {workers} worker(s)")
                try:
                    case = run_case(f"{args.postgres}?schema={schema}", schema, workers,
                                    args.runs, args.steps, directory)
                finally:
                    drop(args.postgres, schema)
                results.setdefault(f"postgres/{workers} workers", []).append(case)
    for name, cases in results.items():
        rates = [case[0] for case in cases]
        ratios = [rate / base for rate, base in zip(rates, sqlite_rates, strict=True)]
        ratio = sorted(ratios)[len(ratios) // 2] if name.startswith("postgres") else None
        emit(BENCH, name, "runs_per_second", "runs/s", rates, ratio=ratio,
             ratio_to="sqlite/1 worker" if ratio else None, runs=args.runs, steps=args.steps)
        emit(BENCH, name, "worker_cpu_us_per_step", "us", [case[1] for case in cases])
        servers = [case[2] for case in cases if case[2] is not None]
        if servers:
            emit(BENCH, name, "server_cpu_us_per_step", "us", servers)


if __name__ == "__main__":
    main()

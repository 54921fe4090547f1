"""B2: many concurrent runs. N runs (1,000 and 10,000) of 5 steps each, all started at once;
each step is one ``ctx.llm`` on a ``ScriptedModel`` with 50 ms of latency and one read-only
async tool call. Durable: SQLite file, durability ``power``.

Reported per N: wall time from the first start to the last completion, runs per second, run
latency (start to result) p50 and p99, and the peak RSS of the process (each case runs in a
child process under ``/usr/bin/time -v``). The baseline, measured in the same repetition, is a
plain asyncio program doing the same 5 x 50 ms sleeps in N tasks, with no journal.

Targets: 1,000 x 5 <= 0.6 s; 10,000 x 5 <= 3 s; peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import anyio

import tether
from bench_agents import SLOW_MODEL, concurrent
from bench_common import (
    base_parser,
    emit,
    log,
    max_rss_mb,
    paired_ratio,
    python_child,
    run_child,
    sqlite_url,
    with_time,
    work_dir,
)

BENCH = "b2_concurrent"
SCRIPT = Path(__file__).resolve()
WALL_TARGETS = {1000: "<= 0.6", 10000: "<= 3"}
RSS_TARGET = "<= 300"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def settings_for(store: str, runs: int, db: Path) -> tether.Settings:
    if store == "memory":
        return tether.Settings(db="memory://", max_concurrent_runs=max(runs, 1))
    return tether.Settings(db=sqlite_url(db), durability="power" if store == "power" else "process",
                           max_concurrent_runs=max(runs, 1))


async def tether_case(store: str, runs: int, steps: int, db: Path) -> dict[str, float]:
    settings = settings_for(store, runs, db)
    latencies: list[float] = []
    async with tether.Runtime(settings=settings, worker=False) as rt:

        async def one() -> None:
            begun = time.perf_counter()
            handle = await rt.start(concurrent, {"steps": steps})
            result = await handle.result()
            latencies.append(time.perf_counter() - begun)
            assert result == 2 + 2 * steps, result

        started = time.perf_counter()
        # The callers are spawned as the baseline's are (plain asyncio tasks), so the ratio
        # compares the runtime, not two ways of starting 10,000 tasks.
        async with asyncio.TaskGroup() as group:
            for _ in range(runs):
                group.create_task(one())
        wall = time.perf_counter() - started
        commits = getattr(rt.store, "batches", 0)
    return {"wall_seconds": wall, "p50_seconds": percentile(latencies, 0.5),
            "p99_seconds": percentile(latencies, 0.99), "commits": commits}


async def asyncio_case(runs: int, steps: int, latency: float) -> dict[str, float]:
    latencies: list[float] = []

    async def one() -> None:
        begun = time.perf_counter()
        for _ in range(steps):
            await asyncio.sleep(latency)
        latencies.append(time.perf_counter() - begun)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(runs):
            group.create_task(one())
    wall = time.perf_counter() - started
    return {"wall_seconds": wall, "p50_seconds": percentile(latencies, 0.5),
            "p99_seconds": percentile(latencies, 0.99)}


def child(args: argparse.Namespace) -> None:
    if args.child == "tether":
        result = anyio.run(tether_case, args.store, args.child_runs, args.steps, args.db)
    else:
        result = asyncio.run(asyncio_case(args.child_runs, args.steps, SLOW_MODEL.latency))
    print(json.dumps(result), flush=True)


def measure(kind: str, store: str, runs: int, steps: int, db: Path | None,
            ) -> tuple[dict[str, float], float | None]:
    argv = python_child(SCRIPT, "--child", kind, "--store", store, "--child-runs", str(runs),
                        "--steps", str(steps), *(("--db", str(db)) if db else ()))
    timed = with_time(argv)
    result = run_child(timed or argv, timeout=900).check(f"b2 {kind} child")
    return result.json_lines()[-1], max_rss_mb(result.stderr) if timed else None


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B2")
    parser.add_argument("--runs", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 10000], help="comma-separated run counts (default "
                                                    "1000,10000)")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (default 5)")
    parser.add_argument("--store", choices=["power", "process", "memory"], default="power",
                        help="SQLite durability, or memory:// (default power, as the targets "
                             "assume)")
    parser.add_argument("--child", choices=["tether", "asyncio"], help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    steps: int = args.steps
    with work_dir(args.dir) as directory:
        for runs in args.runs:
            tether_results: list[dict[str, float]] = []
            plain_results: list[dict[str, float]] = []
            tether_rss: list[float] = []
            plain_rss: list[float] = []
            for rep in range(args.reps):
                log(f"b2: {runs} runs x {steps} steps, repetition {rep + 1}/{args.reps}")
                plain, rss = measure("asyncio", args.store, runs, steps, None)
                plain_results.append(plain)
                if rss is not None:
                    plain_rss.append(rss)
                db = directory / f"b2-{runs}-{rep}.db"
                got, rss = measure("tether", args.store, runs, steps, db)
                tether_results.append(got)
                if rss is not None:
                    tether_rss.append(rss)
                for leftover in directory.glob(f"{db.name}*"):
                    leftover.unlink()
            case = f"{runs}x{steps}"
            walls = [r["wall_seconds"] for r in tether_results]
            plain_walls = [r["wall_seconds"] for r in plain_results]
            emit(BENCH, f"asyncio-sleeps/{case}", "wall_seconds", "s", plain_walls,
                 note=f"baseline: {runs} asyncio tasks x {steps} sleeps of "
                      f"{SLOW_MODEL.latency * 1000:g} ms, no journal")
            emit(BENCH, f"{args.store}/{case}", "wall_seconds", "s", walls,
                 target=WALL_TARGETS.get(runs),
                 ratio=paired_ratio(walls, plain_walls), ratio_to=f"asyncio-sleeps/{case}",
                 commits_median=statistics.median(r["commits"] for r in tether_results),
                 note="first start to last completion")
            emit(BENCH, f"{args.store}/{case}", "runs_per_second", "runs/s",
                 [runs / w for w in walls],
                 ratio=paired_ratio([runs / w for w in walls], [runs / w for w in plain_walls]),
                 ratio_to=f"asyncio-sleeps/{case}")
            emit(BENCH, f"{args.store}/{case}", "run_latency_p99_ms", "ms",
                 [r["p99_seconds"] * 1000 for r in tether_results],
                 ratio=paired_ratio([r["p99_seconds"] for r in tether_results],
                                    [r["p99_seconds"] for r in plain_results]),
                 ratio_to=f"asyncio-sleeps/{case}",
                 p50_ms_median=round(
                     statistics.median(r["p50_seconds"] for r in tether_results) * 1000, 1),
                 note="start call to result, per run")
            emit(BENCH, f"asyncio-sleeps/{case}", "peak_rss_mb", "MB", plain_rss or None,
                 note="baseline" if plain_rss else "/usr/bin/time is unavailable")
            emit(BENCH, f"{args.store}/{case}", "peak_rss_mb", "MB", tether_rss or None,
                 target=RSS_TARGET,
                 ratio=paired_ratio(tether_rss, plain_rss) if tether_rss and plain_rss else None,
                 ratio_to=f"asyncio-sleeps/{case}",
                 note="whole process, /usr/bin/time -v" if tether_rss else
                      "/usr/bin/time is unavailable")


if __name__ == "__main__":
    main()

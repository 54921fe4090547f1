"""B1: what one step costs. One run of 1,000 steps; each step is one ``ctx.llm`` on a
``ScriptedModel`` with no latency (the agent keeps a growing message list) and one tool call.

Variants: an async read-only tool, a sync read-only tool (the runtime calls a sync tool in a
worker thread, so that variant includes a thread hop per call) and an async side-effecting
tool (``side_effects=True``: its intent is committed durably before it runs). Stores: SQLite
with durability ``power`` (synchronous=FULL) and ``process`` (synchronous=NORMAL), and
``memory://``.

Reported per case: wall time per step, process CPU time per step (all threads, the SQLite
writer included) and, in a child process under ``strace -f -c``, fsync + fdatasync calls per
step (net of an empty run's, which opens and closes the store). The baseline, measured in the
same repetition, is the same agent loop calling the model and the tool directly, without the
runtime.

Targets: <= 1 fsync per step read-only, <= 2 side-effecting (durability power); <= 30 us of
runtime CPU per step on memory:// (async tools; the sync variant's thread hop costs about
50 us in the plain loop alone, so it is reported without a target).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

import tether
from bench_agents import B1_VARIANTS, FAST_MODEL, plain_loop
from bench_common import (
    base_parser,
    count_fsyncs,
    emit,
    log,
    paired_ratio,
    python_child,
    sqlite_url,
    strace_available,
    work_dir,
)

BENCH = "b1_steps"
STORES = ("power", "process", "memory")
VARIANTS = tuple(B1_VARIANTS)
SCRIPT = Path(__file__).resolve()


@dataclass(frozen=True, slots=True)
class Sample:
    wall_seconds: float
    cpu_seconds: float
    commits: int | None


def settings_for(store: str, directory: Path, tag: str) -> tether.Settings:
    if store == "memory":
        return tether.Settings(db="memory://")
    return tether.Settings(db=sqlite_url(directory / f"b1-{store}-{tag}.db"),
                           durability="power" if store == "power" else "process")


async def run_once(store: str, variant: str, steps: int, directory: Path, tag: str) -> Sample:
    """One run of ``steps`` steps on a fresh database; times only the run itself."""
    agent, _ = B1_VARIANTS[variant]
    async with tether.Runtime(settings=settings_for(store, directory, tag), worker=False) as rt:
        commits_before = getattr(rt.store, "batches", None)
        cpu, wall = time.process_time(), time.perf_counter()
        result = await rt.run(agent, {"steps": steps})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        commits_after = getattr(rt.store, "batches", None)
    if result != 2 + 2 * steps:
        raise RuntimeError(f"{store}/{variant}: the run returned {result!r}")
    commits = (None if commits_before is None or commits_after is None
               else commits_after - commits_before)
    return Sample(wall, cpu, commits)


async def plain_once(variant: str, steps: int) -> Sample:
    _, tool = B1_VARIANTS[variant]
    cpu, wall = time.process_time(), time.perf_counter()
    messages = await plain_loop(FAST_MODEL, tool, steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(messages) == 2 + 2 * steps
    return Sample(wall, cpu, None)


async def timing(args: argparse.Namespace, directory: Path) -> None:
    steps: int = args.steps
    cases = [(store, variant) for store in args.stores for variant in args.variants]
    log(f"b1: warming up ({len(cases)} cases)")
    for variant in args.variants:
        await plain_once(variant, min(steps, 100))
    for store, variant in cases:
        await run_once(store, variant, min(steps, 100), directory, "warmup")
    plain: dict[str, list[Sample]] = {variant: [] for variant in args.variants}
    samples: dict[tuple[str, str], list[Sample]] = {case: [] for case in cases}
    for rep in range(args.reps):
        log(f"b1: repetition {rep + 1}/{args.reps}")
        # Interleaved: the baseline and every case run back to back in each repetition.
        for variant in args.variants:
            plain[variant].append(await plain_once(variant, steps))
        for store, variant in cases:
            samples[store, variant].append(await run_once(store, variant, steps, directory,
                                                          str(rep)))
    for variant in args.variants:
        base = plain[variant]
        emit(BENCH, f"plain-loop/{variant}", "us_per_step_wall", "us",
             [s.wall_seconds / steps * 1e6 for s in base], steps=steps,
             note="baseline: the same loop calling model and tool directly, no runtime")
        emit(BENCH, f"plain-loop/{variant}", "cpu_us_per_step", "us",
             [s.cpu_seconds / steps * 1e6 for s in base], steps=steps, note="baseline")
    for store, variant in cases:
        got, base = samples[store, variant], plain[variant]
        case = f"{store}/{variant}"
        emit(BENCH, case, "us_per_step_wall", "us", [s.wall_seconds / steps * 1e6 for s in got],
             ratio=paired_ratio([s.wall_seconds for s in got], [s.wall_seconds for s in base]),
             ratio_to=f"plain-loop/{variant}", steps=steps)
        # The target is the runtime's own cost; a sync tool adds a thread hop per call that
        # the plain loop pays too (see its baseline), so that variant is reported untargeted.
        cpu_target = "<= 30" if store == "memory" and variant != "sync-read" else None
        emit(BENCH, case, "cpu_us_per_step", "us", [s.cpu_seconds / steps * 1e6 for s in got],
             target=cpu_target,
             ratio=paired_ratio([s.cpu_seconds for s in got], [s.cpu_seconds for s in base]),
             ratio_to=f"plain-loop/{variant}", steps=steps,
             net_of_baseline_us=round(statistics.median(
                 (g.cpu_seconds - b.cpu_seconds) / steps * 1e6
                 for g, b in zip(got, base, strict=True)), 2),
             note="process CPU time (all threads) / steps; net_of_baseline_us subtracts the "
                  "plain loop's CPU")
        if store != "memory":
            emit(BENCH, case, "commits_per_step", "commits",
                 [(s.commits or 0) / steps for s in got], steps=steps,
                 note="SQLite transactions committed during the run / steps (group commit)")


def fsync_target(store: str, variant: str) -> str | None:
    if store != "power":
        return None
    return "<= 2" if variant.endswith("write") else "<= 1"


def fsyncs(args: argparse.Namespace, directory: Path) -> None:
    steps: int = args.steps
    available = strace_available()
    for store in args.stores:
        for variant in args.variants:
            case = f"{store}/{variant}"
            if not available:
                emit(BENCH, case, "fsyncs_per_step", "fsyncs", None,
                     target=fsync_target(store, variant), note="strace is unavailable")
                continue
            log(f"b1: counting fsyncs of {case} under strace")
            per_step: list[float] = []
            totals: list[int] = []
            empties: list[int] = []
            for rep in range(args.reps):
                full, _ = count_fsyncs(python_child(
                    SCRIPT, "--child", store, variant, "--dir", str(directory),
                    "--tag", f"strace{rep}", "--steps", str(steps)))
                empty, _ = count_fsyncs(python_child(
                    SCRIPT, "--child", store, variant, "--dir", str(directory),
                    "--tag", f"strace{rep}-empty", "--steps", "0"))
                per_step.append(max(full - empty, 0) / steps)
                totals.append(full)
                empties.append(empty)
            emit(BENCH, case, "fsyncs_per_step", "fsyncs", per_step,
                 target=fsync_target(store, variant), steps=steps,
                 fsyncs_total_median=statistics.median(totals),
                 fsyncs_empty_run_median=statistics.median(empties),
                 note="strace -f -c in a child process; (fsyncs of the run - fsyncs of an "
                      "empty run on a fresh store) / steps")


def profile(args: argparse.Namespace, directory: Path) -> None:
    """cProfile of the memory:// async-read case (top 25 by cumulative time, on stderr)."""
    store, variant = args.profile.split("/")
    anyio.run(run_once, store, variant, args.steps, directory, "profile-warmup")
    profiler = cProfile.Profile()
    profiler.enable()
    anyio.run(run_once, store, variant, args.steps, directory, "profile")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(out.getvalue(), file=sys.stderr)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue(), file=sys.stderr)


def child(args: argparse.Namespace) -> None:
    """One run in this process (what strace counts); prints one JSON line."""
    store, variant = args.child
    sample = anyio.run(run_once, store, variant, args.steps, args.dir, args.tag)
    print(json.dumps({"wall_seconds": sample.wall_seconds, "cpu_seconds": sample.cpu_seconds,
                      "commits": sample.commits}))


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B1")
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (default 1000)")
    parser.add_argument("--stores", type=lambda s: s.split(","), default=list(STORES),
                        help="comma-separated subset of " + ",".join(STORES))
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--no-fsync", action="store_true", help="skip the strace measurement")
    parser.add_argument("--no-timing", action="store_true", help="only count fsyncs")
    parser.add_argument("--profile", metavar="STORE/VARIANT", default=None,
                        help="instead of measuring, profile one case (e.g. memory/async-read) "
                             "and print the top 25 functions on stderr")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for store in args.stores:
        if store not in STORES:
            parser.error(f"unknown store {store!r}")
    for variant in args.variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}")
    if args.child:
        child(args)
        return
    with work_dir(args.dir) as directory:
        if args.profile:
            profile(args, directory)
            return
        if not args.no_timing:
            anyio.run(timing, args, directory)
        if not args.no_fsync:
            fsyncs(args, directory)


if __name__ == "__main__":
    main()

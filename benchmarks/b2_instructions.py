"""B2 in instructions: what one run of B2's workload costs, counted by callgrind.

Wall time on a shared machine moves by tens of percent between identical runs, which hides a
change of a few percent. Instructions executed barely move, so this is the measure to compare
two versions of the hot path with (``PYTHONPATH=OTHER/src`` runs another checkout's code
under the same harness). It says nothing about cache misses or lock waits: confirm a change
with B2 itself.

Each case is B2's workload (runs of 5 steps: ``ctx.llm`` on a 50 ms scripted model and one
read-only async tool) in a child process under ``valgrind --tool=callgrind``, once with one run
and once with ``--runs`` runs; the difference divided by the extra runs is the cost of a run,
without the interpreter's start-up. Reported for the event loop's thread and for all threads
(the SQLite writer's included). Needs valgrind; about a minute per case.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import anyio

from b2_concurrent import tether_case
from bench_common import base_parser, emit, log, python_child, run_child, work_dir

BENCH = "b2_instructions"
SCRIPT = Path(__file__).resolve()


def count(store: str, runs: int, steps: int, directory: Path) -> tuple[int, int]:
    """Instructions of one child process: its main thread, and all its threads."""
    out = directory / f"callgrind-{store}-{runs}"
    argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            *python_child(SCRIPT, "--child", "--store", store, "--child-runs", str(runs),
                          "--steps", str(steps), "--db", str(directory / f"{store}-{runs}.db"))]
    run_child(argv, timeout=1800).check(f"b2_instructions {store} child")
    totals: dict[str, int] = {}
    for part in directory.glob(f"{out.name}-*"):
        for line in part.read_text().splitlines():
            if line.startswith("summary:"):
                totals[part.name] = int(line.split()[1])
        part.unlink()
    main = totals[f"{out.name}-01"]  # thread 1 runs the event loop
    return main, sum(totals.values())


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B2 instructions")
    parser.add_argument("--runs", type=int, default=500, help="runs in the measured case")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (default 5)")
    parser.add_argument("--stores", default="memory,power",
                        help="comma-separated subset of memory,process,power")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="memory", help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        anyio.run(tether_case, args.store, args.child_runs, args.steps, args.db)
        return
    if shutil.which("valgrind") is None:
        for store in args.stores.split(","):
            emit(BENCH, f"{store}/{args.steps}-steps", "instructions_per_run", "instructions",
                 None, note="valgrind is not installed")
        return
    with work_dir(args.dir) as directory:
        for store in args.stores.split(","):
            log(f"b2_instructions: {store}, 1 run and {args.runs} runs under callgrind")
            main_one, all_one = count(store, 1, args.steps, directory)
            main_many, all_many = count(store, args.runs, args.steps, directory)
            extra = args.runs - 1
            emit(BENCH, f"{store}/{args.steps}-steps", "instructions_per_run", "instructions",
                 [(main_many - main_one) / extra], note="event loop thread",
                 all_threads=round((all_many - all_one) / extra), runs=args.runs)


if __name__ == "__main__":
    main()

"""B13: what keeping each tenant's data in its own region's store costs.

1,000 runs of a two-step agent (a model call to an instant scripted model, then a read-only
tool), half of tenant acme and half of tenant globex, started together in one runtime and
waited for; wall time from the first start to the last result, on SQLite files (``process``
durability, so the figure is the routing and not the disk):

* ``one-file``: one SQLite store holding both tenants (the baseline);
* ``routed-1``: a ``RoutedStore`` with one region that is both tenants' home (routing alone);
* ``routed-2``: a ``RoutedStore`` over two files, acme in eu and globex in us (routing plus a
  second writer thread, each file committing its half of the runs).

    .venv/bin/python benchmarks/b13_regions.py [--runs 1000] [--reps 5]
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

import tether
from bench_common import base_parser, emit, log, paired_ratio, sqlite_url, work_dir
from tether.config import Regions, Settings
from tether.testing import ScriptedModel
from tether.types import Reply, ToolCall

BENCH = "b13_regions"
CASES = ("one-file", "routed-1", "routed-2")
TENANTS = ("acme", "globex")


@tether.tool(side_effects=False)
async def lookup(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: paid"


MODEL = ScriptedModel([Reply(text=None, tool_calls=[ToolCall("lookup", {"order_id": "A-1"}, "c0")])])


@tether.agent(name="support", version="1", tools=[lookup])
async def support(ctx: tether.Context) -> str:
    reply = await ctx.llm("scripted", [{"role": "user", "content": "A-1?"}])
    call = reply.tool_calls[0]
    result: str = await ctx.tool(call.name, call.args)
    return result


def settings(case: str, directory: Path) -> Settings:
    base = Settings(db=sqlite_url(directory / "one.db"), durability="process")
    if case == "one-file":
        return base
    if case == "routed-1":
        return base.replace(regions=Regions(stores={"eu": sqlite_url(directory / "eu.db")},
                                            homes=dict.fromkeys(TENANTS, "eu")))
    return base.replace(regions=Regions(
        stores={"eu": sqlite_url(directory / "eu.db"), "us": sqlite_url(directory / "us.db")},
        homes={"acme": "eu", "globex": "us"}))


async def run_once(case: str, runs: int, directory: Path) -> float:
    async with tether.Runtime(settings=settings(case, directory), models=[MODEL],
                              agents=[support]) as rt:
        started = time.perf_counter()
        handles = [await rt.start(support, tenant=TENANTS[i % 2]) for i in range(runs)]
        for handle in handles:
            await handle.result()
        return time.perf_counter() - started


async def measure(runs: int, reps: int, parent: Path | None) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {case: [] for case in CASES}
    for case in CASES:  # warm up imports and caches
        with work_dir(parent) as directory:
            await run_once(case, min(runs, 100), directory)
    for rep in range(reps):
        log(f"b13: repetition {rep + 1}/{reps}")
        for case in CASES:
            with work_dir(parent) as directory:
                walls[case].append(await run_once(case, runs, directory))
    return walls


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    walls = anyio.run(measure, args.runs, args.reps, args.dir)
    for case in CASES:
        emit(BENCH, f"sqlite-process/{case}", "wall_us_per_run", "us",
             [wall / args.runs * 1e6 for wall in walls[case]],
             ratio=None if case == "one-file" else paired_ratio(walls[case], walls["one-file"]),
             ratio_to=None if case == "one-file" else "one-file", runs=args.runs,
             note="2 effects a run, started together, tenants alternating")


if __name__ == "__main__":
    main()

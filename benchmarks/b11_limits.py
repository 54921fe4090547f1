"""B11: the cost of the rate-limit and budget stages per model call, and how accurately a
limit admits its rate under 1,000 concurrent callers.

(a) One run making 2,000 ``ctx.llm`` calls to an instant scripted model, on ``memory://``
and on an SQLite file: wall time per call with no stages (the same-run baseline), with a
rate limit (requests and tokens per minute, per tenant and model; state in process or in
the store), and with a run and a daily tenant budget (reserve + reconcile in the store).
The stage cost is the difference to the baseline.

(b) 1,000 callers hit one limit of 6,000 requests per minute (burst 10) for 3 s of real time,
queueing (10 tenants, served in turn): admitted / (burst + rate x elapsed), state in process and in SQLite.

    .venv/bin/python benchmarks/b11_limits.py [--reps 5]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

import tether
from bench_common import base_parser, emit, log
from tether._clock import SystemClock
from tether.config import Settings
from tether.governance import (
    BudgetConfig,
    BudgetStage,
    LocalLimits,
    PeriodBudget,
    RateLimit,
    RateLimiter,
    RateLimitStage,
    RunBudget,
)
from tether.governance._limits import _bucket
from tether.models import ModelPrices
from tether.runtime import Stage
from tether.store import SQLiteStore
from tether.testing import ScriptedModel
from tether.types import Reply, Usage

BENCH = "b11_limits"
CALLS = 2_000
LIMITS = (RateLimit(name="tenant-model", per=("tenant", "model"), requests_per_minute=1e9,
                    tokens_per_minute=1e12),)
BUDGETS = BudgetConfig(run=RunBudget(steps=10 * CALLS, cost_usd=1e6),
                       periods=(PeriodBudget(per="tenant", period="day", cost_usd=1e6),),
                       prices={"scripted": ModelPrices(input=1.0, output=2.0)})


@tether.agent(name="caller", version="1")
async def caller(ctx: tether.Context, calls: int) -> int:
    for i in range(calls):
        await ctx.llm("scripted", [{"role": "user", "content": f"call {i}"}])
    return calls


async def per_call_us(db: str, stages: list[Stage]) -> float:
    model = ScriptedModel(lambda m, t: Reply(text="ok", usage=Usage(20, 5)))
    async with tether.Runtime(settings=Settings(db=db, durability="process"), stages=stages,
                              models=[model]) as rt:
        started = time.perf_counter()
        await rt.run(caller, {"calls": CALLS})
        return (time.perf_counter() - started) / CALLS * 1e6


async def stage_costs(repeat: int) -> None:
    clock = SystemClock()
    variants: dict[str, Callable[[], list[Stage]]] = {
        "baseline": list,
        "rate limit, state in process": lambda: [
            RateLimitStage(LIMITS, RateLimiter(clock, LocalLimits()))],
        "rate limit, state in the store": lambda: [RateLimitStage(LIMITS, RateLimiter(clock))],
        "budget (run + tenant day)": lambda: [BudgetStage(BUDGETS, clock)],
    }
    for engine in ("memory", "sqlite"):
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeat):
            for name, make in variants.items():
                with tempfile.TemporaryDirectory() as tmp:
                    db = "memory://" if engine == "memory" else f"sqlite:///{Path(tmp) / 't.db'}"
                    results[name].append(await per_call_us(db, make()))
        base = statistics.median(results["baseline"])
        for name, values in results.items():
            if name == "baseline":
                emit(BENCH, f"{engine}/no stages", "wall_us_per_call", "us", values)
                continue
            emit(BENCH, f"{engine}/{name}", "stage_us_per_call", "us",
                 [value - base for value in values], ratio=statistics.median(values) / base,
                 ratio_to=f"{engine}/no stages")


async def accuracy(state_name: str) -> float:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "t.db", flush_interval_ms=1)
        await store.open()
        try:
            state = LocalLimits() if state_name == "process" else store
            limiter = RateLimiter(clock, state)
            limit = RateLimit(name="acc", requests_per_minute=6000, burst=10,
                              max_wait_seconds=60)
            bucket = _bucket(limit, "requests", {}, 1, 6000, 10)
            admitted = 0
            started = time.monotonic()
            deadline = started + 3.0

            async def one(i: int) -> None:
                nonlocal admitted
                while True:
                    await limiter.acquire(bucket, f"tenant-{i % 10}")
                    if time.monotonic() < deadline:
                        admitted += 1

            with anyio.move_on_after(3.0):
                async with anyio.create_task_group() as group:
                    for i in range(1000):
                        group.start_soon(one, i)
            elapsed = deadline - started
            return admitted / (10 + 100 * elapsed)
        finally:
            await store.aclose()


async def main(repeat: int) -> None:
    await stage_costs(repeat)
    for state in ("process", "sqlite"):
        log(f"b11: admitted-rate accuracy, state {state}")
        ratios = [await accuracy(state) for _ in range(repeat)]
        emit(BENCH, f"1,000 callers/state {state}", "admitted_over_allowed", "ratio", ratios,
             target="<= 1")


if __name__ == "__main__":
    anyio.run(main, base_parser(__doc__.split("\n\n")[0] if __doc__ else BENCH).parse_args().reps)

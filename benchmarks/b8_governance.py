"""B8: what governance costs per tool call.

* ``decide+audit``: one ``call_tool`` decision (Cedar, pre-parsed policies; the principal's
  and the agent's request in one batch, as the stage asks) plus one audit append (canonical
  JSON, keyed digest of the arguments, queued to the SQLite writer) - what the governance
  stage adds before a tool acts. Median and p99 per call, over ``--calls`` calls per rep.
* ``cedar-one-request``: a single Cedar request with the same handles, measured in the same
  rep: the floor the stage's work is compared with (``ratio``).
* ``tool-call`` (end to end): one run of ``--steps`` read-only tool calls on SQLite, with
  and without the governance stage; ``ratio`` is governed over ungoverned wall time per call.

Goal: decide+audit <= 100 us median (the research measured Cedar alone at 47 us p50).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import anyio
import cedarpy

import tether
from bench_common import base_parser, emit, log, sqlite_url, work_dir
from tether.governance import Governance, GovernanceConfig
from tether.store import SQLiteStore

POLICIES = Path(__file__).resolve().parent.parent / "tests" / "governance" / "policies"


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def governance(directory: Path) -> Governance:
    shutil.copytree(POLICIES, directory / "policies", dirs_exist_ok=True)
    return Governance(GovernanceConfig(policy_dir=directory / "policies",
                                       audit_dir=directory / "audit"))


CONTEXT = {"args": {"order_id": "A-1", "amount": 20},
           "run": {"id": "r", "agent": "support", "tenant": "acme", "principal": "alice"},
           "approval": {"granted": False, "approver": ""}}


async def decide_and_audit(directory: Path, calls: int) -> tuple[list[float], list[float]]:
    gov = governance(directory)
    store = SQLiteStore(directory / "b8.db", durability="process")
    await store.open()
    stage_us, cedar_us = [], []
    bundle = gov.engine.bundle()
    request = {"principal": {"type": "User", "id": "alice"},
               "action": {"type": "Action", "id": "call_tool"},
               "resource": {"type": "Tool", "id": "refund"}, "context": CONTEXT}
    try:
        for _ in range(calls):
            start = time.perf_counter()
            decision = gov.engine.authorize(principal="alice", agent="support", tenant="acme",
                                            action="call_tool", resource="refund",
                                            context=CONTEXT)
            gov.audit.append(store, "acme", {
                "type": "decision", "principal": "alice", "agent": "support", "run_id": "r",
                "seq": 1, "kind": "tool", "name": "refund", "decision": decision.to_json(),
                "args_digest": gov.audit.digest("acme", CONTEXT["args"])})
            stage_us.append((time.perf_counter() - start) * 1e6)
            start = time.perf_counter()
            cedarpy.is_authorized(request, bundle.policies, bundle.entities)
            cedar_us.append((time.perf_counter() - start) * 1e6)
            assert decision.allowed
    finally:
        await store.aclose()
    return stage_us, cedar_us


@tether.tool(side_effects=False)
async def lookup_order(order_id: str) -> str:
    return order_id


def _agent(steps: int) -> tether.Agent:
    async def support(ctx: tether.Context) -> int:
        for step in range(steps):
            await ctx.tool("lookup_order", {"order_id": f"A-{step}"})
        return steps
    return tether.agent(name="support", version="b8", tools=[lookup_order])(support)


async def tool_calls(directory: Path, steps: int, governed: bool) -> float:
    db = directory / ("governed.db" if governed else "plain.db")
    stages = governance(directory).stages() if governed else []
    settings = tether.Settings(db=sqlite_url(db), durability="process", principal="alice",
                               tenant="acme")
    async with tether.Runtime(settings=settings, stages=stages) as rt:
        start = time.perf_counter()
        await rt.run(_agent(steps), {})
        return (time.perf_counter() - start) * 1e6 / steps


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    medians, p99s, cedar, ratios = [], [], [], []
    governed, plain = [], []
    with work_dir(args.dir) as root:
        for rep in range(args.reps):
            log(f"b8 rep {rep + 1}/{args.reps}")
            stage_us, cedar_us = anyio.run(decide_and_audit, root / f"d{rep}", args.calls)
            medians.append(statistics.median(stage_us))
            p99s.append(_p99(stage_us))
            cedar.append(statistics.median(cedar_us))
            ratios.append(medians[-1] / cedar[-1])
            plain.append(anyio.run(tool_calls, root / f"p{rep}", args.steps, False))
            governed.append(anyio.run(tool_calls, root / f"g{rep}", args.steps, True))
    emit("b8_governance", "decide+audit", "us_per_call_median", "us", medians,
         target="<= 100", ratio=statistics.median(ratios), ratio_to="cedar-one-request")
    emit("b8_governance", "decide+audit", "us_per_call_p99", "us", p99s)
    emit("b8_governance", "cedar-one-request", "us_per_call_median", "us", cedar)
    emit("b8_governance", "tool-call/ungoverned", "wall_us_per_call", "us", plain)
    emit("b8_governance", "tool-call/governed", "wall_us_per_call", "us", governed,
         ratio=statistics.median(g / p for g, p in zip(governed, plain, strict=True)),
         ratio_to="tool-call/ungoverned")


if __name__ == "__main__":
    main()

"""Agents and settings for the budget tests (importable by a worker subprocess too)."""

from __future__ import annotations

import tether
from tether.errors import BudgetExceeded
from tether.governance import BudgetConfig, PeriodBudget, RunBudget
from tether.models import ModelPrices
from tether.testing import ScriptedModel
from tether.types import Reply, Usage

# 100 tokens in and 50 out at $1 and $2 per million: 200 micro-USD a call, exactly.
USAGE = Usage(100, 50)
PRICES = {"scripted": ModelPrices(input=1.0, output=2.0)}
COST_MICRO = 200


def model() -> ScriptedModel:
    return ScriptedModel(lambda messages, tools: Reply(text="ok", usage=USAGE))


def ten_calls_a_day(**changes: object) -> BudgetConfig:
    """acme may make ten model calls a day (and spend at most a dollar)."""
    return BudgetConfig(periods=(PeriodBudget(per="tenant", period="day", steps=10,
                                              cost_usd=1.0),),
                        prices=PRICES, default_max_tokens=500, **changes)  # type: ignore[arg-type]


def one_step_a_run(**changes: object) -> BudgetConfig:
    return BudgetConfig(run=RunBudget(steps=1), prices=PRICES,
                        default_max_tokens=500, **changes)  # type: ignore[arg-type]


@tether.agent(name="support", version="1")
async def spender(ctx: tether.Context, calls: int = 1) -> list[str]:
    """Makes ``calls`` model calls; says so when the budget stops it."""
    said = []
    for i in range(calls):
        try:
            reply = await ctx.llm("scripted", [{"role": "user", "content": f"call {i}"}])
        except BudgetExceeded as exc:
            said.append(f"over budget: {exc.scope}")
            break
        said.append(reply.text or "")
    return said

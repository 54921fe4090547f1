"""Budgets as ledgers: per run (tokens, cost, tool calls, steps, wall time) and per tenant or
principal per day or month (the same dimensions).

A budget is a cap on a balance kept in the store (``Store.ledger_post``), never a counter in
memory: a restart resets nothing, and every worker sees the same balance. Before a model call
the stage *reserves* its worst case (the input estimated at four characters a token, plus the
reply's ``max_tokens``, priced) on every scope at once, all or nothing, atomically in the
store: concurrent runs cannot together spend past a cap, because each one's reservation is
checked against the others'. After the call it *reconciles*: the difference between the
reservation and what the provider reported goes back to the ledger, so the balance ends at
exactly what was spent. (Checking recorded spend before a call and adding it after is how
budgets get overspent under concurrency.)

Every scope starts with its run's tenant (``tenant:acme:run:<run_id>:steps``,
``tenant:acme:2026-11-26:cost_micro_usd``, ``tenant:acme:principal:alice:2026-11:tokens``),
so with stores by region (``store/_routed.py``) each ledger line is kept in its tenant's
region, and a post never spans two. A per-principal budget is therefore kept per principal
within a tenant.

Posts are keyed by the effect (``run_id:seq``): executing a call again after a crash does not
charge twice, and a crash between the reservation and the reconciliation leaves the worst
case charged (never less than was spent). Replays never get here: the journal answers first.

When a budget is exhausted the call fails with ``BudgetExceeded``, journaled as its outcome
(the agent may catch it; a replay sees the same refusal), or, with ``on_exhausted =
"approval"``, the run parks for a person to raise the budget (the ``approve`` action on the
tool ``budget``); approved, the exhausted budget grows by its own size once.

    [governance.budgets]
    on_exhausted = "raise"          # or "approval"
    run = { cost_usd = 0.50, steps = 20, tool_calls = 50, wall_seconds = 600 }
    [[governance.budgets.periods]]
    per = "tenant"                  # or "principal"
    period = "day"                  # or "month"
    cost_usd = 20.0
    [governance.budgets.prices.my-model]   # USD per million tokens, for unpriced models
    input = 0.15
    output = 0.60
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tether import _json
from tether._clock import Clock
from tether.errors import BudgetExceeded, ConfigError, TetherError
from tether.models import ModelConfig, ModelPrices, Pricer, price_table_version
from tether.runtime import Effect, Handler
from tether.store import Approval, LedgerEntry, Store
from tether.types import JSONObject, Usage

MICRO = 1_000_000
"""Cost is kept in micro-USD: integers add up exactly in every engine."""

DIMENSIONS = ("tokens", "cost_usd", "tool_calls", "steps")


@dataclass(frozen=True, kw_only=True, slots=True)
class Allowance:
    """Caps per dimension; None: no cap on that one."""

    tokens: int | None = None
    """Input and output tokens of model calls."""
    cost_usd: float | None = None
    tool_calls: int | None = None
    steps: int | None = None
    """Model calls (each turn of an agent's loop is one)."""

    def caps(self) -> dict[str, int]:
        """The caps in ledger units (micro-USD for cost)."""
        found: dict[str, int] = {}
        for dim in DIMENSIONS:
            value = getattr(self, dim)
            if value is not None:
                found[_unit(dim)] = round(value * MICRO) if dim == "cost_usd" else int(value)
        return found

    def check(self, where: str) -> None:
        for dim in DIMENSIONS:
            value = getattr(self, dim)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ConfigError(f"{where}.{dim} must be a number, at least 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunBudget(Allowance):
    """What one run may spend."""

    wall_seconds: float | None = None
    """How long after its start a run may still make calls."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PeriodBudget(Allowance):
    """What each tenant (or principal) may spend per UTC day or calendar month."""

    per: Literal["tenant", "principal"] = "tenant"
    period: Literal["day", "month"] = "day"
    only: str | None = None
    """Only this tenant (or principal); None: each one."""

    def applies(self, tenant: str, principal: str) -> bool:
        """Whether a run of ``tenant`` and ``principal`` is charged to this budget."""
        return self.only is None or self.only == (tenant if self.per == "tenant" else principal)

    def scope(self, tenant: str, principal: str, now_ms: int) -> str:
        """The ledger scope (before ``:<unit>``) of the period holding ``now_ms``; the
        console reads the same names to show a tenant's spend."""
        now = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.UTC)
        stamp = now.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")
        if self.per == "tenant":
            return f"tenant:{tenant}:{stamp}"
        return f"tenant:{tenant}:principal:{principal}:{stamp}"


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetConfig:
    """``[governance.budgets]``."""

    run: RunBudget = field(default_factory=RunBudget)
    periods: tuple[PeriodBudget, ...] = ()
    on_exhausted: Literal["raise", "approval"] = "raise"
    default_max_tokens: int = 4096
    """The reply's worst case for a model that sets no ``max_tokens``."""
    prices: Mapping[str, ModelPrices] = field(default_factory=dict)
    """USD per million tokens by model name; these win over the ``genai-prices`` table."""

    def __post_init__(self) -> None:
        self.run.check("governance.budgets.run")
        if self.run.wall_seconds is not None and self.run.wall_seconds <= 0:
            raise ConfigError("governance.budgets.run.wall_seconds must be positive")
        for i, period in enumerate(self.periods):
            period.check(f"governance.budgets.periods[{i}]")
            if period.per not in ("tenant", "principal") or period.period not in ("day", "month"):
                raise ConfigError(f"governance.budgets.periods[{i}]: per is tenant or principal, "
                                  "period is day or month")
        if self.on_exhausted not in ("raise", "approval"):
            raise ConfigError("governance.budgets.on_exhausted is raise or approval")
        if self.default_max_tokens < 1:
            raise ConfigError("governance.budgets.default_max_tokens must be at least 1")


def _unit(dim: str) -> str:
    return "cost_micro_usd" if dim == "cost_usd" else dim


def worst_case_tokens(call: Any, default_max_tokens: int) -> tuple[int, int]:
    """(estimated input tokens, the most output tokens) of a model call: four characters a
    token over the messages and tool schemas (rounded up), and the model's ``max_tokens``."""
    text = json.dumps(call.messages, separators=(",", ":")) + "".join(
        json.dumps(spec.parameters) + spec.name + spec.description for spec in call.tools)
    config = getattr(call.model, "config", None)
    most = getattr(config, "max_tokens", None) or default_max_tokens
    return math.ceil(len(text) / 4), int(most)


class BudgetStage:
    """Reserves the worst case before a call, reconciles after; refuses (or asks a person)
    when a budget is exhausted.

    Args:
        config: the budgets.
        clock: wall time (periods, wall-time budgets).
        audit: an ``AuditLog`` to record each reservation and its price table (optional).
        approvals: the ``GovernanceStage`` that parks runs for decisions (``approval`` mode).
    """

    kinds: frozenset[str] | None = frozenset({"llm", "tool"})

    def __init__(self, config: BudgetConfig, clock: Clock, *, audit: Any = None,
                 approvals: Any = None) -> None:
        if config.on_exhausted == "approval" and approvals is None:
            raise ConfigError("governance.budgets.on_exhausted = \"approval\" needs governance "
                              "approvals (a [governance] table with a policy_dir)")
        self.config = config
        self._clock = clock
        self._audit = audit
        self._approvals = approvals
        self._run_caps = config.run.caps()
        self._pricers: dict[str, tuple[Pricer | None, str]] = {}

    # -- what a call charges ---------------------------------------------------------------

    def _pricer(self, model: Any) -> tuple[Pricer | None, str]:
        name = str(getattr(model, "name", ""))
        found = self._pricers.get(name)
        if found is None:
            override = self.config.prices.get(name)
            config = getattr(model, "config", None)
            if override is not None:
                found = Pricer("", "", override), price_table_version(override)
            elif isinstance(config, ModelConfig):
                found = (Pricer(config.provider, config.model, config.prices),
                         price_table_version(config.prices))
            else:
                found = None, "none"
            self._pricers[name] = found
        return found

    def _cost_micro(self, effect: Effect, usage: Usage, *, reported: bool) -> int | None:
        if reported and usage.cost_usd is not None and effect.request.model.name not in (
                self.config.prices):
            return math.ceil(usage.cost_usd * MICRO)
        pricer, _ = self._pricer(effect.request.model)
        cost = None if pricer is None else pricer.cost_usd(usage)
        return None if cost is None else math.ceil(cost * MICRO)

    def _amounts(self, effect: Effect) -> dict[str, int]:
        """What the call charges up front, by ledger unit (the worst case for a model)."""
        if effect.kind == "tool":
            return {"tool_calls": 1}
        given, most = worst_case_tokens(effect.request, self.config.default_max_tokens)
        amounts = {"steps": 1, "tokens": given + most}
        cost = self._cost_micro(effect, Usage(given, most), reported=False)
        if cost is not None:
            amounts["cost_micro_usd"] = cost
        return amounts

    def _entries(self, effect: Effect, amounts: dict[str, int]) -> list[LedgerEntry]:
        """One entry per capped scope this call charges: the run's, and each period's."""
        run = effect.scope.run
        tenant = f"tenant:{run.tenant}"
        now_ms = self._clock.now_ms()
        capped = [(f"{tenant}:run:{run.run_id}", self._run_caps)] + [
            (period.scope(run.tenant, run.principal, now_ms), period.caps())
            for period in self.config.periods if period.applies(run.tenant, run.principal)]
        entries = []
        for prefix, caps in capped:
            for unit, cap in caps.items():
                if unit in amounts:
                    entries.append(LedgerEntry(f"{prefix}:{unit}", amounts[unit], cap))
                elif unit == "cost_micro_usd" and effect.kind == "llm":
                    # Unknown is not free: a cost cap cannot be kept for an unpriced model.
                    raise BudgetExceeded(
                        f"no price is known for model {effect.name!r} and {prefix} has a cost "
                        f"budget: set [governance.budgets.prices.{effect.name}] input and "
                        "output (USD per million tokens)", scope=f"{prefix}:{unit}", limit=cap)
        return entries

    # -- the stage -------------------------------------------------------------------------

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        run = effect.scope.run
        store = effect.scope.journal.store
        wall = self.config.run.wall_seconds
        if wall is not None:
            elapsed = self._clock.now_ms() - run.created_at_ms
            if elapsed > wall * 1000:
                raise BudgetExceeded(
                    f"run {run.run_id} has run {elapsed / 1000:.1f} s, past its wall-time "
                    f"budget of {wall:g} s",
                    scope=f"tenant:{run.tenant}:run:{run.run_id}:wall_ms",
                    limit=int(wall * 1000), spent=elapsed)
        amounts = self._amounts(effect)
        entries = self._entries(effect, amounts)
        if not entries:
            return await call_next(effect)
        post_id = f"{run.run_id}:{effect.seq}"
        await self._reserve(effect, store, post_id, entries)
        held = {e.scope: e.amount for e in entries}
        detail: JSONObject = {"reserved": dict(amounts.items())}
        if effect.kind == "llm":
            detail["price_table"] = self._pricer(effect.request.model)[1]
        effect.detail["budget"] = detail
        try:
            value = await call_next(effect)
        except TetherError:
            await self._settle(effect, store, post_id, entries, held, None)
            raise
        await self._settle(effect, store, post_id, entries, held, value)
        return value

    async def _reserve(self, effect: Effect, store: Store, post_id: str,
                       entries: list[LedgerEntry]) -> None:
        now = self._clock.now_ms()
        try:
            await store.ledger_post(post_id, entries, now_ms=now)
            return
        except BudgetExceeded as exc:
            if self.config.on_exhausted == "raise":
                self._record(effect, store, {"type": "budget.exhausted", **exc.to_json()})
                raise
            refusal = exc
        approval = await self._ask(effect, store, refusal)
        if approval.status != "approved":
            raise BudgetExceeded(
                f"{refusal.message}; raising it was {approval.status}"
                + (f" by {approval.decided_by}" if approval.decided_by else "")
                + (f": {approval.reason}" if approval.reason else ""),
                scope=refusal.scope, limit=refusal.limit, spent=refusal.spent,
                requested=refusal.requested)
        # One more budget's worth, given once per approval (the post id makes it so).
        await store.ledger_post(f"{approval.approval_id}:credit",
                                [LedgerEntry(refusal.scope, -max(refusal.limit, 1))],
                                now_ms=self._clock.now_ms())
        self._record(effect, store, {"type": "budget.raised", "scope": refusal.scope,
                                     "by": approval.decided_by or "",
                                     "amount": max(refusal.limit, 1),
                                     "approval_id": approval.approval_id})
        await store.ledger_post(post_id, entries, now_ms=self._clock.now_ms())

    async def _ask(self, effect: Effect, store: Store, refusal: BudgetExceeded) -> Approval:
        """The decided approval to raise the exhausted budget (the run parks meanwhile)."""
        run = effect.scope.run
        now = self._clock.now_ms()
        approval = await store.request_approval(Approval(
            approval_id=f"{run.run_id}:{effect.seq}:budget", run_id=run.run_id, seq=effect.seq,
            tenant=run.tenant, principal=run.principal, agent=run.agent, tool="budget",
            args=_json.encode({"scope": refusal.scope, "limit": refusal.limit,
                               "spent": refusal.spent, "requested": refusal.requested,
                               "call": {"kind": effect.kind, "name": effect.name}}),
            message=_json.encode({"text": refusal.message, "tool_call": None}),
            policies="[]", status="pending", requested_at_ms=now,
            expires_at_ms=now + self._approvals.timeout_ms))
        self._record(effect, store, {"type": "approval.requested",
                                     "approval_id": approval.approval_id,
                                     "reason": "budget", "scope": refusal.scope})
        decided: Approval = await self._approvals.await_decision(effect, approval)
        return decided

    async def _settle(self, effect: Effect, store: Store, post_id: str,
                      entries: list[LedgerEntry], held: dict[str, int], value: Any) -> None:
        """Give back what the call did not use: everything of a failed model call's tokens
        and cost; the difference to the provider's usage otherwise. Calls stay counted."""
        if effect.kind != "llm":
            self._record(effect, store, {"type": "budget.charged", "charged": held})
            return
        usage = Usage.from_json(effect.detail.get("usage") or {}) if value is not None else None
        actual: dict[str, int] = {}
        if usage is not None:
            actual["tokens"] = usage.input_tokens + usage.output_tokens
            cost = self._cost_micro(effect, usage, reported=True)
            if cost is not None:
                actual["cost_micro_usd"] = cost
        back = []
        for entry in entries:
            unit = entry.scope.rsplit(":", 1)[1]
            if unit in ("tokens", "cost_micro_usd"):
                delta = actual.get(unit, 0) - held[entry.scope]
                if delta:
                    back.append(LedgerEntry(entry.scope, delta))
        if back:
            await store.ledger_post(f"{post_id}:settle", back, now_ms=self._clock.now_ms())
        detail = effect.detail.get("budget")
        if isinstance(detail, dict):
            detail["actual"] = dict(actual)
        self._record(effect, store, {"type": "budget.charged", "actual": dict(actual),
                                     "price_table": self._pricer(effect.request.model)[1]})

    def _record(self, effect: Effect, store: Store, record: JSONObject) -> None:
        if self._audit is None:
            return
        run = effect.scope.run
        self._audit.append(store, run.tenant, {
            **record, "principal": run.principal, "agent": run.agent, "run_id": run.run_id,
            "seq": effect.seq, "kind": effect.kind, "name": effect.name})

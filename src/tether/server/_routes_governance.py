"""``/v1/approvals``, ``/v1/audit`` and ``/v1/spend``: what operators look at and decide.

Approvals and the audit trail need ``[governance]`` (its policies decide who may approve,
its keys sign the checkpoints); without it these routes answer 400 with what to configure.
"""

from __future__ import annotations

import json

import pydantic
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tether.errors import ApprovalNotFound, UsageError
from tether.governance import (
    MICRO,
    Governance,
    PeriodBudget,
    audit_report,
    checkpoint_verifier,
)
from tether.server._routes_runs import MAX_PAGE, _Body, _int_param, body
from tether.server._state import AppState, caller_of
from tether.store import Approval
from tether.types import JSONObject

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "all")


class Decide(_Body):
    approve: bool
    reason: str = pydantic.Field(min_length=1, max_length=2000)


def _governance(state: AppState) -> Governance:
    if state.governance is None:
        raise UsageError("approvals and the audit trail need [governance] in tether.toml")
    return state.governance


async def list_approvals(request: Request) -> Response:
    state, caller = caller_of(request)
    status = request.query_params.get("status", "pending")
    if status not in APPROVAL_STATUSES:
        raise UsageError(f"status must be one of {', '.join(APPROVAL_STATUSES)}, not {status!r}")
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    # The store lists every tenant's; take generously and keep the caller's.
    found = await state.runtime.store.list_approvals(status=None if status == "all" else status,
                                                     limit=limit * 10)
    mine = [a.to_json() for a in found if a.tenant == caller.tenant][:limit]
    return JSONResponse({"approvals": mine})


async def _approval(state: AppState, request: Request) -> Approval:
    _, caller = caller_of(request)
    approval_id = request.path_params["approval_id"]
    approval = await state.runtime.store.get_approval(approval_id)
    if approval is None or approval.tenant != caller.tenant:
        raise ApprovalNotFound(approval_id)
    return approval


async def get_approval(request: Request) -> Response:
    state, _ = caller_of(request)
    return JSONResponse((await _approval(state, request)).to_json())


async def decide_approval(request: Request) -> Response:
    state, caller = caller_of(request)
    governance = _governance(state)
    approval = await _approval(state, request)
    spec = await body(request, Decide)
    assert isinstance(spec, Decide)
    decided = await governance.decide_approval(state.runtime.store, approval.approval_id,
                                               approve=spec.approve, by=caller.principal,
                                               reason=spec.reason)
    return JSONResponse(decided.to_json())


async def audit_records(request: Request) -> Response:
    state, caller = caller_of(request)
    _governance(state)
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    rows = await state.runtime.store.load_audit(caller.tenant, after_idx=after, limit=limit)
    return JSONResponse({
        "records": [{"idx": row.idx, "hash": row.hash, "record": json.loads(row.body)}
                    for row in rows],
        "next_after": rows[-1].idx if len(rows) == limit else None})


async def audit_verify(request: Request) -> Response:
    """The caller's tenant's part of ``audit_report``, with what ``tether audit verify``
    prints: problems, unanchored tails, and whether the checkpoint key is pinned."""
    state, caller = caller_of(request)
    config = _governance(state).config
    report = await audit_report(state.runtime.store, checkpoint_verifier(config),
                                config.checkpoints_path)
    head = await state.runtime.store.audit_head(caller.tenant)
    # Other tenants' problems are theirs to see; a forged checkpoint line ("?") is everyone's.
    mine = [p for p in report.problems if p.tenant in (caller.tenant, "?")]
    gaps = [u for u in report.unanchored if u.tenant == caller.tenant]
    return JSONResponse({
        "tenant": caller.tenant, "records": head.idx if head else 0, "intact": not mine,
        "anchored": not gaps,
        "key": "pinned" if config.checkpoint_public_key else "checkpoint.pub",
        "problems": [{"tenant": p.tenant, "record": p.idx, "message": p.message,
                      "text": str(p)} for p in mine],
        "unanchored": [{"tenant": u.tenant, "first": u.first, "last": u.last,
                        "text": str(u)} for u in gaps]})


async def spend(request: Request) -> Response:
    """The caller's tenant's spend: from the budget ledger when a per-tenant budget is
    configured (exact, over every run, for the current day or month), otherwise summed from
    the journals of its most recent runs. ``source`` says which."""
    state, caller = caller_of(request)
    limit = _int_param(request, "runs", 100, 1, 1000)
    lines = await _ledger_spend(state, caller.tenant)
    if lines:
        return JSONResponse({"tenant": caller.tenant, "source": "ledger", "ledger": lines,
                             "journals": None})
    return JSONResponse({"tenant": caller.tenant, "source": "journals", "ledger": [],
                         "journals": await _journal_spend(state, caller.tenant, limit)})


async def _ledger_spend(state: AppState, tenant: str) -> list[JSONObject]:
    """The tenant's balance against each capped unit of each per-tenant period budget (the
    scopes ``BudgetStage`` posts to); empty when no such budget applies to the tenant.
    Balances include the worst case reserved by calls still in flight."""
    governance = state.governance
    budgets = None if governance is None else governance.config.budgets
    if governance is None or budgets is None:
        return []
    now_ms = governance.clock.now_ms()  # the clock the budget stage stamps periods with
    wanted: list[tuple[PeriodBudget, str, str, int]] = []
    for period in budgets.periods:
        if period.per == "tenant" and period.applies(tenant, ""):
            prefix = period.scope(tenant, "", now_ms)
            wanted += [(period, f"{prefix}:{unit}", unit, cap)
                       for unit, cap in period.caps().items()]
    if not wanted:
        return []
    balances = await state.runtime.store.ledger_balances([scope for _, scope, _, _ in wanted])
    lines: list[JSONObject] = []
    for period, scope, unit, cap in wanted:
        spent = balances.get(scope, 0)
        if unit == "cost_micro_usd":
            lines.append({"scope": scope, "period": period.period, "unit": "cost_usd",
                          "spent": spent / MICRO, "cap": cap / MICRO})
        else:
            lines.append({"scope": scope, "period": period.period, "unit": unit,
                          "spent": spent, "cap": cap})
    return lines


async def _journal_spend(state: AppState, tenant: str, limit: int) -> JSONObject:
    """Tokens and cost of the tenant's ``limit`` most recent runs, from their journals."""
    store = state.runtime.store
    runs = await store.list_runs(tenant=tenant, limit=limit)
    totals: JSONObject = {"runs": len(runs), "model_calls": 0, "input_tokens": 0,
                          "output_tokens": 0, "cost_usd": 0.0, "unpriced_calls": 0}
    by_agent: dict[str, float] = {}
    for run in runs:
        for record in await store.load_journal(run.run_id):
            detail = json.loads(record.detail) if record.detail else {}
            usage = detail.get("usage") if isinstance(detail, dict) else None
            if record.kind != "llm" or not isinstance(usage, dict):
                continue
            totals["model_calls"] += 1
            totals["input_tokens"] += int(usage.get("input_tokens", 0))
            totals["output_tokens"] += int(usage.get("output_tokens", 0))
            cost = usage.get("cost_usd")
            if cost is None:
                totals["unpriced_calls"] += 1
            else:
                totals["cost_usd"] += float(cost)
                by_agent[run.agent] = by_agent.get(run.agent, 0.0) + float(cost)
    return {**totals, "cost_usd_by_agent": by_agent}

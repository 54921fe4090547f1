"""The kill switch: cancel every run that has not ended, of a tenant or an agent, or one run.

Cancelling is a store write (``Store.cancel_run``), so it reaches runs executing in any
process: their worker's next heartbeat learns the claim is gone and cancels the run's task,
which interrupts an in-flight tool call (a sandboxed one's process is killed when its call
is cancelled). The journal stays consistent: every record is final or an intent without an
outcome, and the run is ``cancelled`` for good, so nothing replays it. Each cancellation is
audited in the run's tenant chain with who did it and why.
"""

from __future__ import annotations

from typing import Any

from tether.runtime import Runtime
from tether.types import Run, RunStatus

_LIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.NEEDS_ATTENTION)
_PAGE = 100_000


async def live_runs(runtime: Runtime, *, tenant: str | None = None,
                    agent: str | None = None) -> list[Run]:
    """Every run that has not ended, optionally of one tenant and/or agent."""
    found: list[Run] = []
    for status in _LIVE:
        runs = await runtime.store.list_runs(status=status, limit=_PAGE, agent=agent)
        found += [run for run in runs if tenant is None or run.tenant == tenant]
    return found


async def cancel_runs(runtime: Runtime, runs: list[Run], *, by: str, reason: str,
                      audit: Any = None) -> list[Run]:
    """Cancel ``runs`` as principal ``by``; returns those now cancelled (a run that ended
    meanwhile keeps its outcome). With ``audit`` (an ``AuditLog``), each is recorded."""
    cancelled = []
    touched: set[str] = set()
    for run in runs:
        after = await runtime.cancel(run.run_id, reason=reason, by=by)
        if after.status is not RunStatus.CANCELLED:
            continue
        cancelled.append(after)
        if audit is not None:
            audit.append(runtime.store, run.tenant, {
                "type": "run.cancelled", "run_id": run.run_id, "agent": run.agent,
                "principal": by, "reason": reason, "was": str(run.status)})
            touched.add(run.tenant)
    for tenant in sorted(touched):
        await audit.checkpoint(runtime.store, tenant)
    return cancelled

"""``tether runs cancel --all``: the kill switch over every run that has not ended."""

from __future__ import annotations

from tether.cli._common import CLIState
from tether.cli._identity import Identity
from tether.errors import PolicyDenied
from tether.governance import cancel_runs, live_runs
from tether.runtime import Runtime
from tether.types import Run


async def cancel_all(state: CLIState, *, tenant: str | None, principal: str | None,
                     agent: str | None, reason: str) -> tuple[list[Run], list[Run]]:
    """Cancel every live run this identity sees (of ``agent``, if given) and may cancel.
    Returns (cancelled, refused by the policies)."""
    who = Identity(state, tenant, principal)
    async with Runtime(settings=state.settings(), worker=False) as rt:
        allowed, refused = [], []
        for run in await live_runs(rt, tenant=who.list_tenant, agent=agent):
            try:
                allowed.append(await who.check(rt.store, run, "cancel_run"))
            except PolicyDenied:
                refused.append(run)
        audit = None if who.governance is None else who.governance.audit
        cancelled = await cancel_runs(rt, allowed, by=who.principal, reason=reason, audit=audit)
    return cancelled, refused

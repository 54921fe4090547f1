"""The audit trail and approvals of ``MemoryStore`` (see ``Store.append_audit`` and on)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from tether.errors import ApprovalNotFound
from tether.store._common import AUDIT_GENESIS, approval_signal, chain_hash, check_decidable
from tether.store._protocol import Approval, AuditRow, Commit


class MemoryGovernance:
    """Mixed into ``MemoryStore``, which makes the dictionaries below and delivers signals."""

    _rows: dict[str, Any]
    _audit: dict[str, list[AuditRow]]
    _approvals: dict[str, Approval]
    _deliver: Callable[[Any, str, str | None, int], None]
    """``MemoryStore._deliver``: store a signal, waking a run that waits for it."""

    def append_audit(self, tenant: str, bodies: list[str], commit: Commit,
                     ) -> Awaitable[None] | None:
        chain = self._audit.setdefault(tenant, [])
        for body in bodies:
            previous = chain[-1].hash if chain else AUDIT_GENESIS
            chain.append(AuditRow(tenant, len(chain) + 1, body, chain_hash(previous, body)))
        return None

    async def load_audit(self, tenant: str, *, after_idx: int = 0, limit: int | None = None,
                         ) -> list[AuditRow]:
        rows = self._audit.get(tenant, [])[after_idx:]
        return rows if limit is None else rows[:limit]

    async def audit_tenants(self) -> list[str]:
        return sorted(tenant for tenant, rows in self._audit.items() if rows)

    async def audit_head(self, tenant: str) -> AuditRow | None:
        rows = self._audit.get(tenant)
        return rows[-1] if rows else None

    async def request_approval(self, approval: Approval) -> Approval:
        return self._approvals.setdefault(approval.approval_id, approval)

    async def decide_approval(self, approval_id: str, *, status: str, by: str, reason: str,
                              now_ms: int) -> Approval:
        approval = self._approvals.get(approval_id)
        if approval is None:
            raise ApprovalNotFound(approval_id)
        check_decidable(approval, status, now_ms)
        decided = dataclasses.replace(approval, status=status, decided_by=by, reason=reason,
                                      decided_at_ms=now_ms)
        self._approvals[approval_id] = decided
        row = self._rows.get(approval.run_id)
        if row is not None and not row.run.status.is_terminal:
            self._deliver(row, approval_signal(approval.seq), None, now_ms)
        return decided

    async def get_approval(self, approval_id: str) -> Approval | None:
        return self._approvals.get(approval_id)

    async def list_approvals(self, *, status: str | None = None, limit: int = 100,
                             ) -> list[Approval]:
        found = [a for a in self._approvals.values() if status is None or a.status == status]
        return sorted(found, key=lambda a: (a.requested_at_ms, a.approval_id))[:limit]

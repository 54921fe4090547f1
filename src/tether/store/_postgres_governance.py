"""The audit trail and approvals of ``PostgresStore`` (see ``Store.append_audit`` and on).

As on SQLite, audit appends go through the store's writer, so a decision's record commits in
the transaction that carries the effect's intent. Several processes append to one tenant's
chain here, so each append first takes a transaction-scoped advisory lock on the tenant: the
next link is read and written by one transaction at a time, and the chain never forks.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from tether.errors import ApprovalNotFound
from tether.store._common import AUDIT_GENESIS, approval_signal, chain_hash, check_decidable
from tether.store._postgres_reads import PostgresReads
from tether.store._postgres_sql import Conn, deliver
from tether.store._protocol import Approval, AuditRow, Commit
from tether.store._writer import Bulk

T = TypeVar("T")

APPROVAL_COLUMNS = ("approval_id, run_id, seq, tenant, principal, agent, tool, args_json, "
                    "message_json, policies_json, status, requested_at_ms, expires_at_ms, "
                    "decided_by, reason, decided_at_ms")
_AUDIT_LOCK = "tether.audit:"  # advisory lock key prefix, hashed with the tenant


def _select_approval(conn: Conn, approval_id: str, *, lock: bool = False) -> Approval | None:
    """An approval; with ``lock``, held until the transaction ends, so two deciders (two
    people, or a person and the expiry) cannot both decide it."""
    row = conn.execute(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE approval_id = %s"
                       + (" FOR UPDATE" if lock else ""), (approval_id,)).fetchone()
    return None if row is None else Approval(*row)


def _append_audits(conn: Conn, many: list[tuple[str, list[str]]]) -> bool:
    """Append each (tenant, bodies) to its tenant's chain. The tenants' locks are taken first,
    in sorted order, so two workers' batches can never wait on each other's tenants crosswise
    (a deadlock would abort one batch)."""
    bodies_of: dict[str, list[str]] = {}
    for tenant, bodies in many:
        bodies_of.setdefault(tenant, []).extend(bodies)
    tenants = sorted(bodies_of)
    for tenant in tenants:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (_AUDIT_LOCK + tenant,))
    rows = []
    for tenant in tenants:
        head = conn.execute("SELECT idx, hash FROM audit WHERE tenant = %s ORDER BY idx DESC "
                            "LIMIT 1", (tenant,)).fetchone()
        idx, previous = head if head is not None else (0, AUDIT_GENESIS)
        for body in bodies_of[tenant]:
            idx += 1
            previous = chain_hash(previous, body)
            rows.append((tenant, idx, body, previous))
    conn.execute("INSERT INTO audit (tenant, idx, body, hash) SELECT * FROM "
                 "unnest(%s::text[], %s::bigint[], %s::text[], %s::text[])",
                 [list(column) for column in zip(*rows, strict=True)])
    return True


# Before every other operation of a batch (phase -1): a batch takes its tenant locks first.
AUDIT = Bulk("audit", -1, _append_audits)


class PostgresGovernance(PostgresReads):
    """Mixed into ``PostgresStore``, whose writer, reader pool and channel it uses."""

    _channel: str

    def append_audit(self, tenant: str, bodies: list[str], commit: Commit,
                     ) -> Awaitable[None] | None:
        if not bodies:
            return None
        item = (tenant, bodies)
        return self._submit(lambda conn: _append_audits(conn, [item]), commit, bulk=AUDIT,
                            payload=item)

    async def load_audit(self, tenant: str, *, after_idx: int = 0, limit: int | None = None,
                         ) -> list[AuditRow]:
        rows = await self._read("SELECT tenant, idx, body, hash FROM audit WHERE tenant = %s "
                                "AND idx > %s ORDER BY idx LIMIT %s", (tenant, after_idx, limit))
        return [AuditRow(*row) for row in rows]

    async def audit_tenants(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT tenant FROM audit ORDER BY tenant")
        return [row[0] for row in rows]

    async def audit_head(self, tenant: str) -> AuditRow | None:
        rows = await self._read("SELECT tenant, idx, body, hash FROM audit WHERE tenant = %s "
                                "ORDER BY idx DESC LIMIT 1", (tenant,))
        return AuditRow(*rows[0]) if rows else None

    async def request_approval(self, approval: Approval) -> Approval:
        values = (approval.approval_id, approval.run_id, approval.seq, approval.tenant,
                  approval.principal, approval.agent, approval.tool, approval.args,
                  approval.message, approval.policies, approval.status,
                  approval.requested_at_ms, approval.expires_at_ms, approval.decided_by,
                  approval.reason, approval.decided_at_ms)

        def apply(conn: Conn) -> Approval:
            conn.execute(f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ("
                         + ", ".join(["%s"] * len(values)) + ") "
                         "ON CONFLICT (approval_id) DO NOTHING", values)
            stored = _select_approval(conn, approval.approval_id)
            assert stored is not None
            return stored
        return await self._write(apply)

    async def decide_approval(self, approval_id: str, *, status: str, by: str, reason: str,
                              now_ms: int) -> Approval:
        def apply(conn: Conn) -> Approval:
            approval = _select_approval(conn, approval_id, lock=True)
            if approval is None:
                raise ApprovalNotFound(approval_id)
            check_decidable(approval, status, now_ms)
            conn.execute("UPDATE approvals SET status = %s, decided_by = %s, reason = %s, "
                         "decided_at_ms = %s WHERE approval_id = %s",
                         (status, by, reason, now_ms, approval_id))
            ended = conn.execute(
                "SELECT 1 FROM runs WHERE run_id = %s AND status IN "
                "('completed', 'failed', 'cancelled')", (approval.run_id,)).fetchone()
            if not ended:
                deliver(conn, self._channel, approval.run_id, approval_signal(approval.seq),
                        None, now_ms)
            decided = _select_approval(conn, approval_id)
            assert decided is not None
            return decided
        return await self._write(apply)

    async def get_approval(self, approval_id: str) -> Approval | None:
        rows = await self._read(f"SELECT {APPROVAL_COLUMNS} FROM approvals "
                                "WHERE approval_id = %s", (approval_id,))
        return Approval(*rows[0]) if rows else None

    async def list_approvals(self, *, status: str | None = None, limit: int = 100,
                             ) -> list[Approval]:
        where, params = ("WHERE status = %s", (status,)) if status is not None else ("", ())
        rows = await self._read(f"SELECT {APPROVAL_COLUMNS} FROM approvals {where} "
                                "ORDER BY requested_at_ms, approval_id LIMIT %s",
                                (*params, limit))
        return [Approval(*row) for row in rows]

"""The audit trail and approvals of ``SQLiteStore`` (see ``Store.append_audit`` and on).

Audit appends go through the same writer as journal records, so a decision's record commits
in the same transaction as the effect's intent, and the chain's next link is read and written
inside that transaction: two processes on one file cannot fork a tenant's chain.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable
from typing import Any, TypeVar

from tether.errors import ApprovalNotFound
from tether.store._common import AUDIT_GENESIS, approval_signal, chain_hash, check_decidable
from tether.store._protocol import Approval, AuditRow, Commit
from tether.store._sqlite_reads import SQLiteReads
from tether.store._sqlite_sql import deliver

T = TypeVar("T")

_APPROVAL_COLUMNS = ("approval_id, run_id, seq, tenant, principal, agent, tool, args_json, "
                     "message_json, policies_json, status, requested_at_ms, expires_at_ms, "
                     "decided_by, reason, decided_at_ms")


def _approval(row: tuple[Any, ...] | None) -> Approval | None:
    return None if row is None else Approval(*row)


def _select_approval(conn: sqlite3.Connection, approval_id: str) -> Approval | None:
    return _approval(conn.execute(f"SELECT {_APPROVAL_COLUMNS} FROM approvals "
                                  "WHERE approval_id = ?", (approval_id,)).fetchone())


def _append_audit(conn: sqlite3.Connection, tenant: str, bodies: list[str]) -> None:
    head = conn.execute("SELECT idx, hash FROM audit WHERE tenant = ? ORDER BY idx DESC LIMIT 1",
                        (tenant,)).fetchone()
    idx, previous = head if head is not None else (0, AUDIT_GENESIS)
    rows = []
    for body in bodies:
        idx += 1
        previous = chain_hash(previous, body)
        rows.append((tenant, idx, body, previous))
    conn.executemany("INSERT INTO audit (tenant, idx, body, hash) VALUES (?,?,?,?)", rows)


class SQLiteGovernance(SQLiteReads):
    """Mixed into ``SQLiteStore``, whose writer and readers it uses."""

    def append_audit(self, tenant: str, bodies: list[str], commit: Commit,
                     ) -> Awaitable[None] | None:
        return self._submit(lambda conn: _append_audit(conn, tenant, bodies), commit)

    async def load_audit(self, tenant: str, *, after_idx: int = 0, limit: int | None = None,
                         ) -> list[AuditRow]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT tenant, idx, body, hash FROM audit WHERE tenant = ? AND idx > ? "
            "ORDER BY idx LIMIT ?", (tenant, after_idx, -1 if limit is None else limit)).fetchall())
        return [AuditRow(*row) for row in rows]

    async def audit_tenants(self) -> list[str]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT DISTINCT tenant FROM audit ORDER BY tenant").fetchall())
        return [row[0] for row in rows]

    async def audit_head(self, tenant: str) -> AuditRow | None:
        row = await self._read(lambda conn: conn.execute(
            "SELECT tenant, idx, body, hash FROM audit WHERE tenant = ? ORDER BY idx DESC "
            "LIMIT 1", (tenant,)).fetchone())
        return None if row is None else AuditRow(*row)

    async def request_approval(self, approval: Approval) -> Approval:
        values = (approval.approval_id, approval.run_id, approval.seq, approval.tenant,
                  approval.principal, approval.agent, approval.tool, approval.args,
                  approval.message, approval.policies, approval.status,
                  approval.requested_at_ms, approval.expires_at_ms, approval.decided_by,
                  approval.reason, approval.decided_at_ms)

        def apply(conn: sqlite3.Connection) -> Approval:
            conn.execute(f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES "
                         "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (approval_id) DO NOTHING",
                         values)
            stored = _select_approval(conn, approval.approval_id)
            assert stored is not None
            return stored
        return await self._write(apply)

    async def decide_approval(self, approval_id: str, *, status: str, by: str, reason: str,
                              now_ms: int) -> Approval:
        def apply(conn: sqlite3.Connection) -> Approval:
            approval = _select_approval(conn, approval_id)
            if approval is None:
                raise ApprovalNotFound(approval_id)
            check_decidable(approval, status, now_ms)
            conn.execute("UPDATE approvals SET status = ?, decided_by = ?, reason = ?, "
                         "decided_at_ms = ? WHERE approval_id = ?",
                         (status, by, reason, now_ms, approval_id))
            ended = conn.execute(
                "SELECT 1 FROM runs WHERE run_id = ? AND status IN "
                "('completed', 'failed', 'cancelled')", (approval.run_id,)).fetchone()
            if not ended:
                deliver(conn, approval.run_id, approval_signal(approval.seq), None, now_ms)
            decided = _select_approval(conn, approval_id)
            assert decided is not None
            return decided
        return await self._write(apply)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._read(lambda conn: _select_approval(conn, approval_id))

    async def list_approvals(self, *, status: str | None = None, limit: int = 100,
                             ) -> list[Approval]:
        where, params = ("WHERE status = ?", [status]) if status is not None else ("", [])
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals {where} "
            "ORDER BY requested_at_ms, approval_id LIMIT ?", (*params, limit)).fetchall())
        return [Approval(*row) for row in rows]

"""``MemoryStore`` (``memory://``): the whole store in dictionaries, gone when the process ends.

For tests, benchmarks of the runtime itself, and agents that need replay semantics but no
durability. It keeps every rule of the ``Store`` protocol (fencing, forward-only records,
signal delivery) so the shared store tests hold for it too; only durability is missing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace

from tether.errors import LeaseLost, RunNotFound, StoreError
from tether.store._common import (
    check_resolvable,
    child_signal,
    failed_by_operator,
    refuse_signal_if_ended,
    resolved_record,
)
from tether.store._memory_governance import MemoryGovernance
from tether.store._memory_ledger import MemoryLedger
from tether.store._protocol import (
    MISSING,
    Approval,
    AuditRow,
    Claim,
    Commit,
    Created,
    Missing,
    NewRun,
    OwnerIsDead,
    Record,
    RecordState,
    Waker,
)
from tether.types import JSONObject, Run, RunStatus


@dataclass(slots=True)
class _Row:
    run: Run
    fence: int = 0
    lease_expires_at_ms: int = 0
    finished_at_ms: int | None = None
    journal: dict[int, Record] = field(default_factory=dict)
    # (name, data, consumed_seq); a list keeps delivery order
    signals: list[list[str | int | None]] = field(default_factory=list)


class MemoryStore(MemoryGovernance, MemoryLedger):
    """A store in process memory; see the module docstring."""

    location = "memory://"

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._audit: dict[str, list[AuditRow]] = {}
        self._approvals: dict[str, Approval] = {}
        MemoryLedger.__init__(self)

    async def open(self) -> None:
        return None

    def watch(self, wake: Waker) -> None:
        pass  # nothing tells another process's writes apart: workers poll

    async def aclose(self) -> None:
        return None

    def forget_claim(self, run_id: str, fence: int) -> None:
        return None

    def _row(self, run_id: str) -> _Row:
        row = self._rows.get(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def _fenced(self, run_id: str, fence: int) -> _Row:
        row = self._rows.get(run_id)
        if row is None or row.fence != fence or row.run.status is not RunStatus.RUNNING:
            raise LeaseLost(run_id)
        return row

    def _update(self, row: _Row, **changes: object) -> None:
        row.run = replace(row.run, **changes)  # type: ignore[arg-type]

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun, *, now_ms: int, owner: str | None,
                         lease_ms: int) -> Created:
        existing = self._rows.get(new.run_id)
        if existing is not None:
            return Created(existing.run, None)
        run = Run(run_id=new.run_id, agent=new.agent, agent_version=new.agent_version,
                  agent_ref=new.agent_ref, input=json.loads(new.input),
                  status=RunStatus.RUNNING if owner else RunStatus.PENDING,
                  thread_id=new.thread_id, parent_run_id=new.parent_run_id, tenant=new.tenant,
                  principal=new.principal, created_at_ms=now_ms, updated_at_ms=now_ms,
                  owner=owner)
        row = _Row(run, fence=1 if owner else 0,
                   lease_expires_at_ms=now_ms + lease_ms if owner else 0)
        self._rows[new.run_id] = row
        return Created(run, Claim(run, row.fence) if owner else None)

    def _claimable(self, row: _Row, now_ms: int, owner_is_dead: OwnerIsDead, me: str) -> bool:
        run = row.run
        if run.status is RunStatus.PENDING:
            return (run.owner is None or row.lease_expires_at_ms < now_ms
                    or (run.owner != me and owner_is_dead(run.owner)))
        if run.status is RunStatus.WAITING:
            return run.wake_at_ms is not None and run.wake_at_ms <= now_ms
        if run.status is RunStatus.RUNNING:
            return row.lease_expires_at_ms < now_ms or (
                run.owner is not None and run.owner != me and owner_is_dead(run.owner))
        return False

    async def claim_runs(self, *, owner: str, now_ms: int, lease_ms: int, limit: int,
                         owner_is_dead: OwnerIsDead, run_ids: list[str] | None = None,
                         ) -> list[Claim]:
        candidates = ([self._rows[r] for r in run_ids if r in self._rows]
                      if run_ids is not None else list(self._rows.values()))
        claims: list[Claim] = []
        for row in candidates:
            if len(claims) >= limit:
                break
            if self._claimable(row, now_ms, owner_is_dead, owner):
                row.fence += 1
                row.lease_expires_at_ms = now_ms + lease_ms
                self._update(row, status=RunStatus.RUNNING, owner=owner, wake_at_ms=None,
                             updated_at_ms=now_ms)
                claims.append(Claim(row.run, row.fence))
        return claims

    async def heartbeat(self, *, owner: str, run_ids: list[str], now_ms: int,
                        lease_ms: int) -> list[str]:
        lost = []
        for run_id in run_ids:
            row = self._rows.get(run_id)
            if row is None or row.run.owner != owner or row.run.status is not RunStatus.RUNNING:
                lost.append(run_id)
            else:
                row.lease_expires_at_ms = now_ms + lease_ms
        return lost

    async def release(self, *, owner: str) -> None:
        for row in self._rows.values():
            if row.run.owner == owner:
                row.lease_expires_at_ms = 0
                self._update(row, owner=None)

    def _settle(self, row: _Row, status: RunStatus, result: str | None, error: str | None,
                now_ms: int) -> None:
        row.fence += 1
        row.lease_expires_at_ms = 0
        row.finished_at_ms = now_ms if status.is_terminal else None
        self._update(row, status=status, result=None if result is None else json.loads(result),
                     error=None if error is None else json.loads(error), owner=None,
                     wake_at_ms=None, waiting_for=None, updated_at_ms=now_ms)
        parent_id = row.run.parent_run_id
        if parent_id is not None and status.is_terminal and parent_id in self._rows:
            name, data = child_signal(row.run.run_id, status, result, error)
            self._deliver(self._rows[parent_id], name, data, now_ms)

    async def finish_run(self, run_id: str, fence: int, *, status: RunStatus,
                         result: str | None, error: str | None, now_ms: int) -> None:
        self._settle(self._fenced(run_id, fence), status, result, error, now_ms)

    async def suspend_run(self, run_id: str, fence: int, *, wake_at_ms: int | None,
                          waiting_for: str | None, now_ms: int) -> bool:
        row = self._fenced(run_id, fence)
        if waiting_for is not None and any(
                s[0] == waiting_for and s[2] is None for s in row.signals):
            return False
        row.fence += 1
        row.lease_expires_at_ms = 0
        self._update(row, status=RunStatus.WAITING, owner=None, wake_at_ms=wake_at_ms,
                     waiting_for=waiting_for, updated_at_ms=now_ms)
        return True

    async def cancel_run(self, run_id: str, *, reason: JSONObject, now_ms: int) -> Run:
        row = self._row(run_id)
        if not row.run.status.is_terminal:
            self._settle(row, RunStatus.CANCELLED, None, json.dumps(reason), now_ms)
        return row.run

    async def resolve_run(self, run_id: str, *, action: str, value: str | None,
                          now_ms: int) -> Run:
        row = self._row(run_id)
        uncertain = next((r for _, r in sorted(row.journal.items())
                          if r.state == RecordState.STARTED and r.kind == "tool"), None)
        check_resolvable(row.run, action, uncertain)
        if action == "fail":
            self._settle(row, RunStatus.FAILED, None, failed_by_operator(row.run), now_ms)
        else:
            if uncertain is not None:
                row.journal[uncertain.seq] = resolved_record(uncertain, action, value, now_ms)
            self._update(row, status=RunStatus.PENDING, error=None, updated_at_ms=now_ms)
        return row.run

    async def get_run(self, run_id: str) -> Run | None:
        row = self._rows.get(run_id)
        return None if row is None else row.run

    async def list_runs(self, *, status: RunStatus | None = None, limit: int = 100,
                        agent: str | None = None, tenant: str | None = None,
                        before: tuple[int, str] | None = None) -> list[Run]:
        runs = [row.run for row in self._rows.values()
                if (status is None or row.run.status is status)
                and (agent is None or row.run.agent == agent)
                and (tenant is None or row.run.tenant == tenant)
                and (before is None or (row.run.created_at_ms, row.run.run_id) < before)]
        # The SQL stores' order, so a cursor means the same on every engine.
        runs.sort(key=lambda run: (run.created_at_ms, run.run_id), reverse=True)
        return runs[:limit]

    async def next_wake_ms(self) -> int | None:
        wakes = [row.run.wake_at_ms for row in self._rows.values()
                 if row.run.status is RunStatus.WAITING and row.run.wake_at_ms is not None]
        return min(wakes, default=None)

    async def count_runnable(self, *, now_ms: int) -> int:
        return sum(1 for row in self._rows.values()
                   if row.run.status in (RunStatus.PENDING, RunStatus.RUNNING)
                   or (row.run.status is RunStatus.WAITING and row.run.wake_at_ms is not None
                       and row.run.wake_at_ms <= now_ms))

    # -- journal ---------------------------------------------------------------------------

    def append(self, run_id: str, fence: int, records: list[Record], commit: Commit,
               ) -> Awaitable[None] | None:
        row = self._fenced(run_id, fence)
        self._upsert(row, records)
        return None  # applied already: nothing to wait for, whatever the commit mode

    def _upsert(self, row: _Row, records: list[Record]) -> None:
        staged: dict[int, Record] = {}  # a seq may appear twice in one append (intent, outcome)
        for record in records:
            current = staged.get(record.seq) or row.journal.get(record.seq)
            if current is not None and current.state != RecordState.STARTED:
                raise StoreError(f"run {row.run.run_id}: a journal record that is already final "
                                 "cannot change")
            staged[record.seq] = record
        row.journal.update(staged)  # callers never mutate a record they wrote

    async def load_journal(self, run_id: str) -> list[Record]:
        row = self._rows.get(run_id)
        return [] if row is None else [replace(r) for _, r in sorted(row.journal.items())]

    async def load_thread(self, thread_id: str) -> list[JSONObject]:
        rows = sorted((row for row in self._rows.values()
                       if row.run.thread_id == thread_id
                       and row.run.status is RunStatus.COMPLETED),
                      key=lambda row: (row.finished_at_ms or 0, row.run.run_id))
        return [message for row in rows for _, record in sorted(row.journal.items())
                if record.kind == "thread" and record.state == RecordState.OK
                for message in json.loads(record.value or "[]")]

    # -- signals ---------------------------------------------------------------------------

    def _deliver(self, row: _Row, name: str, data: str | None, now_ms: int) -> None:
        row.signals.append([name, data, None])
        if row.run.status is RunStatus.WAITING and row.run.waiting_for == name:
            self._update(row, status=RunStatus.PENDING, wake_at_ms=None, waiting_for=None,
                         updated_at_ms=now_ms)

    async def send_signal(self, run_id: str, name: str, data: str | None, *, now_ms: int) -> Run:
        row = self._row(run_id)
        refuse_signal_if_ended(row.run)
        self._deliver(row, name, data, now_ms)
        return row.run

    async def take_signal(self, run_id: str, fence: int, name: str, record: Record,
                          ) -> str | Missing:
        row = self._fenced(run_id, fence)
        signal = next((s for s in row.signals if s[0] == name and s[2] is None), None)
        if signal is None:
            return MISSING
        value = signal[1] if isinstance(signal[1], str) else "null"
        record.state, record.value = RecordState.OK, value
        self._upsert(row, [record])
        signal[2] = record.seq
        return value


"""The ``Store`` protocol: what the runtime needs from a database, and the rows it trades in.

Two engines implement it (``SQLiteStore``, ``MemoryStore``; ``PostgresStore`` later) and one
test suite runs against each. Semantics every engine keeps:

* **Fencing.** Claiming a run increments its ``fence``. Every write on behalf of a run carries
  the fence its writer claimed with; a write whose fence is stale, or whose run is no longer
  ``running``, is refused with ``LeaseLost`` and nothing of it is kept.
* **Ordering.** Writes are applied in the order they were submitted; a durable write commits
  every write submitted before it (so a lazily written model reply is never lost while the
  side effect it asked for is on record).
* **Journal rows move forward only.** A record is inserted as ``started`` (an intent) or
  final (``ok`` / ``error``); a ``started`` record may be updated, a final one never changes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from tether.types import JSONObject, Run, RunStatus


class Commit(Enum):
    """How soon a write must be durable, and whether the writer waits for it."""

    LAZY = "lazy"
    """Committed with the next batch, at most ``flush_interval_ms`` later; nobody waits."""

    SOON = "soon"
    """Committed in the very next batch; nobody waits."""

    WAIT = "wait"
    """Committed in the very next batch; the caller waits until it is durable."""


class RecordState:
    STARTED = "started"
    OK = "ok"
    ERROR = "error"


@dataclass(slots=True)
class Record:
    """One effect in a run's journal. ``value`` and ``detail`` are JSON text."""

    seq: int
    kind: str
    name: str
    digest: str
    state: str
    value: str | None = None
    attempts: int = 0
    started_at_ms: int = 0
    finished_at_ms: int | None = None
    detail: str | None = None

    def to_json(self) -> JSONObject:
        """The record with its value and detail decoded, for people and scripts."""
        return {"seq": self.seq, "kind": self.kind, "name": self.name, "digest": self.digest,
                "state": self.state, "value": None if self.value is None else json.loads(self.value),
                "attempts": self.attempts, "started_at_ms": self.started_at_ms,
                "finished_at_ms": self.finished_at_ms,
                "detail": None if self.detail is None else json.loads(self.detail)}


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a caller supplies to create a run. ``input`` is JSON text."""

    run_id: str
    agent: str
    agent_version: str
    agent_ref: str
    input: str
    tenant: str
    principal: str
    thread_id: str | None = None
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A run this worker now owns, with the fence to write under."""

    run: Run
    fence: int


@dataclass(frozen=True, slots=True)
class Created:
    """Result of ``create_run``: the run, and the claim when this call created and claimed it."""

    run: Run
    claim: Claim | None


@dataclass(frozen=True, slots=True)
class Signal:
    run_id: str
    name: str
    data: str | None


class Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()
"""``take_signal`` found no signal (distinct from a signal whose data is null)."""

@dataclass(frozen=True, slots=True)
class AuditRow:
    """One record of a tenant's audit chain. ``body`` is canonical JSON text; ``hash`` is
    ``chain_hash(previous row's hash, body)`` (``AUDIT_GENESIS`` before the first row)."""

    tenant: str
    idx: int
    body: str
    hash: str


@dataclass(frozen=True, slots=True)
class Approval:
    """A tool call held for a person's decision. ``approval_id`` is ``<run_id>:<seq>``;
    ``args``, ``message`` and ``policies`` are JSON text; ``status`` is ``pending``,
    ``approved``, ``denied`` or ``expired``."""

    approval_id: str
    run_id: str
    seq: int
    tenant: str
    principal: str
    agent: str
    tool: str
    args: str
    message: str | None
    policies: str
    status: str
    requested_at_ms: int
    expires_at_ms: int
    decided_by: str | None = None
    reason: str | None = None
    decided_at_ms: int | None = None

    def to_json(self) -> JSONObject:
        """The approval with its JSON fields decoded, for people and scripts."""
        return {"approval_id": self.approval_id, "run_id": self.run_id, "seq": self.seq,
                "tenant": self.tenant, "principal": self.principal, "agent": self.agent,
                "tool": self.tool, "args": json.loads(self.args),
                "message": None if self.message is None else json.loads(self.message),
                "policies": json.loads(self.policies), "status": self.status,
                "requested_at_ms": self.requested_at_ms, "expires_at_ms": self.expires_at_ms,
                "decided_by": self.decided_by, "reason": self.reason,
                "decided_at_ms": self.decided_at_ms}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of a ledger post: add ``amount`` (an integer: tokens, calls, micro-USD) to
    ``scope``'s balance; with ``cap``, only if the balance stays at or under it. A negative
    amount gives back (a reconciled reservation, a budget raised by approval)."""

    scope: str
    amount: int
    cap: int | None = None


OwnerIsDead = Callable[[str], bool]
"""Tells whether a worker named in ``runs.owner`` is known to be dead (same host, no process)."""

Waker = Callable[[int | None], None]
"""Called on the event loop when another process may have made work: ``wake(None)`` for
work now (a new run, a delivered signal, released runs), ``wake(at_ms)`` for a timer due then."""


class Store(Protocol):
    """Durable home of runs, journals and signals."""

    location: str
    """Where the data lives, for messages (a path or ``memory://``)."""

    async def open(self) -> None:
        """Open or create the database, migrate it, and refuse one that is too new or corrupt."""
        ...

    async def aclose(self) -> None:
        """Commit what is queued and close."""
        ...

    def watch(self, wake: Waker) -> None:
        """Ask to be woken when other processes make work. Stores that cannot tell (an SQLite
        file, memory) ignore this: their workers poll every ``poll_interval_seconds``."""
        ...

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun, *, now_ms: int, owner: str | None,
                         lease_ms: int) -> Created:
        """Create a run (durably) and, with ``owner``, claim it; an existing id returns the
        existing run and no claim."""
        ...

    async def claim_runs(self, *, owner: str, now_ms: int, lease_ms: int, limit: int,
                         owner_is_dead: OwnerIsDead, run_ids: list[str] | None = None,
                         ) -> list[Claim]:
        """Claim runnable runs: pending ones, waiting ones whose timer is due, and running ones
        whose owner's lease expired or who is dead. ``run_ids`` limits the claim to those runs."""
        ...

    async def heartbeat(self, *, owner: str, run_ids: list[str], now_ms: int,
                        lease_ms: int) -> list[str]:
        """Extend this owner's lease on ``run_ids``; returns those it no longer holds
        (cancelled, or taken over after its lease expired)."""
        ...

    def forget_claim(self, run_id: str, fence: int) -> None:
        """The runtime abandoned this claim: drop any write failure remembered for it."""
        ...

    async def release(self, *, owner: str) -> None:
        """Give up every run this owner holds, so another worker may take them at once."""
        ...

    async def finish_run(self, run_id: str, fence: int, *, status: RunStatus,
                         result: str | None, error: str | None, now_ms: int) -> None:
        """Settle a run (durably): completed, failed or needs_attention. A child run's
        outcome is delivered to its parent as the signal ``tether.child:<run_id>``."""
        ...

    async def suspend_run(self, run_id: str, fence: int, *, wake_at_ms: int | None,
                          waiting_for: str | None, now_ms: int) -> bool:
        """Park a run until ``wake_at_ms`` or the signal ``waiting_for`` (durably). Returns
        False, and leaves the run running, when that signal has already arrived."""
        ...

    async def cancel_run(self, run_id: str, *, reason: JSONObject, now_ms: int) -> Run:
        """Cancel a run that has not ended; its owner's later writes are refused."""
        ...

    async def resolve_run(self, run_id: str, *, action: str, value: str | None,
                          now_ms: int) -> Run:
        """Settle a run in ``needs_attention``: ``retry`` the uncertain effect (or the run),
        ``skip`` it with ``value`` as its result, or ``fail`` the run."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def list_runs(self, *, status: RunStatus | None = None, limit: int = 100,
                        agent: str | None = None, tenant: str | None = None,
                        before: tuple[int, str] | None = None) -> list[Run]:
        """Newest first: by ``created_at_ms``, then ``run_id``, both descending. ``before``
        is a ``(created_at_ms, run_id)`` cursor: only runs after it in that order (a page
        boundary that new runs cannot shift)."""
        ...

    async def next_wake_ms(self) -> int | None:
        """The earliest timer among waiting runs, or None."""
        ...

    async def count_runnable(self, *, now_ms: int) -> int:
        """Runs a worker could claim now, plus runs running anywhere."""
        ...

    # -- journal ---------------------------------------------------------------------------

    def append(self, run_id: str, fence: int, records: list[Record], commit: Commit,
               ) -> Awaitable[None] | None:
        """Insert (or move forward) journal records. Returns an awaitable when the caller
        must wait for durability (``Commit.WAIT`` on a store that commits later), else None.
        Submission order is commit order."""
        ...

    async def load_journal(self, run_id: str) -> list[Record]:
        """Every committed record of a run, by seq."""
        ...

    async def load_thread(self, thread_id: str) -> list[JSONObject]:
        """The message history of a thread: the ``thread`` records of its completed runs."""
        ...

    # -- signals ---------------------------------------------------------------------------

    async def send_signal(self, run_id: str, name: str, data: str | None, *, now_ms: int) -> Run:
        """Deliver a signal (durably); a run waiting for it becomes pending."""
        ...

    async def take_signal(self, run_id: str, fence: int, name: str, record: Record,
                          ) -> str | Missing:
        """Consume the oldest undelivered signal ``name`` and, in the same transaction, store
        ``record`` (made final) with the signal's data as its value. Returns that data as JSON
        text, or ``MISSING``."""
        ...

    # -- audit trail and approvals (tether.governance) -------------------------------------

    def append_audit(self, tenant: str, bodies: list[str], commit: Commit,
                     ) -> Awaitable[None] | None:
        """Append records to ``tenant``'s hash chain: each gets the next ``idx`` (from 1) and
        ``hash = chain_hash(previous hash, body)``, computed where appends are serialized (in
        the writing transaction), so concurrent writers never fork the chain. Same commit
        rules as ``append``."""
        ...

    async def load_audit(self, tenant: str, *, after_idx: int = 0, limit: int | None = None,
                         ) -> list[AuditRow]:
        """A tenant's committed audit rows with ``idx > after_idx``, by idx."""
        ...

    async def audit_tenants(self) -> list[str]:
        """Every tenant that has audit rows, sorted."""
        ...

    async def audit_head(self, tenant: str) -> AuditRow | None:
        """The last committed row of a tenant's chain, or None."""
        ...

    async def request_approval(self, approval: Approval) -> Approval:
        """Record a pending approval (durably); when one with that id exists already, it is
        returned unchanged (a replay asks again for the same call)."""
        ...

    async def decide_approval(self, approval_id: str, *, status: str, by: str, reason: str,
                              now_ms: int) -> Approval:
        """Settle a pending approval (``approved``, ``denied`` or ``expired``) and, in the same
        transaction, deliver the signal ``approval_signal(seq)`` to its run unless the run has
        ended. Raises ``ApprovalNotFound``, ``UsageError`` when it is no longer pending, or
        ``ApprovalExpired`` when ``now_ms`` is at or past its expiry and the status is not
        ``expired``."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    # -- rate limits and budget ledgers (tether.governance) --------------------------------

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        """One atomic step of the generic cell rate algorithm on ``key``'s theoretical
        arrival time (TAT, microseconds): with ``new = max(TAT, now_us) + increment_us``,
        when ``new - now_us <= limit_us`` the TAT becomes ``new`` and 0 is returned (admitted);
        otherwise nothing changes and the microseconds until the same call would be admitted
        are returned. Atomic across every process sharing the store."""
        ...

    async def ledger_post(self, post_id: str, entries: list[LedgerEntry], *,
                          now_ms: int) -> bool:
        """Post every entry or none, atomically across every process sharing the store
        (durably). False, and nothing changes, when ``post_id`` was posted before (a replay
        or a retry). Raises ``BudgetExceeded`` for the first entry (by scope) that would
        pass its cap; nothing is posted then."""
        ...

    async def ledger_balances(self, scopes: list[str]) -> dict[str, int]:
        """The committed balance of each scope (0 for one never posted to)."""
        ...

    async def list_approvals(self, *, status: str | None = None, limit: int = 100,
                             ) -> list[Approval]:
        """Oldest request first."""
        ...

"""Rules both store engines share, kept out of the dialect-specific modules."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tether.errors import ApprovalExpired, UsageError
from tether.store._protocol import Approval, Claim, Created, NewRun, Record, RecordState
from tether.types import JSONObject, Run, RunStatus

CHILD_SIGNAL_PREFIX = "tether.child:"

# Both SQL engines name their columns alike and read rows in this order.
RUN_COLUMNS = ("run_id, agent, agent_version, agent_ref, input_json, status, result_json, "
               "error_json, thread_id, parent_run_id, tenant, principal, created_at_ms, "
               "updated_at_ms, wake_at_ms, waiting_for, owner")
RECORD_COLUMNS = ("seq, kind, name, digest, state, value_json, attempts, started_at_ms, "
                  "finished_at_ms, detail_json")
INSERT_RUN_COLUMNS = ("run_id, agent, agent_version, agent_ref, input_json, status, "
                      "thread_id, parent_run_id, tenant, principal, owner, fence, "
                      "lease_expires_at_ms, created_at_ms, updated_at_ms")


def new_run_row(new: NewRun, *, now_ms: int, owner: str | None, lease_ms: int,
                ) -> tuple[tuple[Any, ...], Created]:
    """A new run's row (``INSERT_RUN_COLUMNS``) and what ``create_run`` answers once it is
    inserted: running and claimed with fence 1 when it has an owner, else pending."""
    status = RunStatus.RUNNING if owner else RunStatus.PENDING
    fence = 1 if owner else 0
    values = (new.run_id, new.agent, new.agent_version, new.agent_ref, new.input,
              str(status), new.thread_id, new.parent_run_id, new.tenant, new.principal,
              owner, fence, now_ms + lease_ms if owner else 0, now_ms, now_ms)
    run = Run(run_id=new.run_id, agent=new.agent, agent_version=new.agent_version,
              agent_ref=new.agent_ref, input=json.loads(new.input), status=status,
              thread_id=new.thread_id, parent_run_id=new.parent_run_id, tenant=new.tenant,
              principal=new.principal, created_at_ms=now_ms, updated_at_ms=now_ms,
              owner=owner)
    return values, Created(run, Claim(run, fence) if owner else None)


def run_from_row(row: tuple[Any, ...] | list[Any]) -> Run:
    """A ``Run`` from a row of ``RUN_COLUMNS``."""
    return Run(
        run_id=row[0], agent=row[1], agent_version=row[2], agent_ref=row[3],
        input=json.loads(row[4]), status=RunStatus(row[5]),
        result=None if row[6] is None else json.loads(row[6]),
        error=None if row[7] is None else json.loads(row[7]),
        thread_id=row[8], parent_run_id=row[9], tenant=row[10], principal=row[11],
        created_at_ms=row[12], updated_at_ms=row[13], wake_at_ms=row[14], waiting_for=row[15],
        owner=row[16],
    )


def runs_filter(mark: str, *, status: RunStatus | None, agent: str | None,
                tenant: str | None, before: tuple[int, str] | None) -> tuple[str, list[object]]:
    """The WHERE clause of ``list_runs`` and its parameters; ``mark`` is the driver's
    placeholder (``?`` or ``%s``). ``before`` is the (created_at_ms, run_id) of the last run of
    the previous page."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (("status", None if status is None else str(status)),
                          ("agent", agent), ("tenant", tenant)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if before is not None:
        clauses.append(f"(created_at_ms, run_id) < ({mark}, {mark})")
        params.extend(before)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def record_row(run_id: str, r: Record) -> tuple[Any, ...]:
    """A journal row (run id, then ``RECORD_COLUMNS``) from a record."""
    return (run_id, r.seq, r.kind, r.name, r.digest, r.state, r.value, r.attempts,
            r.started_at_ms, r.finished_at_ms, r.detail)


def child_signal(run_id: str, status: RunStatus, result: str | None, error: str | None,
                 ) -> tuple[str, str]:
    """The signal (name, JSON data) that tells a parent how its child run ended."""
    data = {"status": str(status),
            "result": None if result is None else json.loads(result),
            "error": None if error is None else json.loads(error)}
    return CHILD_SIGNAL_PREFIX + run_id, json.dumps(data, separators=(",", ":"))


RESOLVE_ACTIONS = ("retry", "skip", "fail")


def check_resolvable(run: Run, action: str, uncertain: Record | None) -> None:
    """Refuse a ``tether resolve`` that does not fit the run, saying what would."""
    if action not in RESOLVE_ACTIONS:
        raise UsageError(f"resolve action must be one of {', '.join(RESOLVE_ACTIONS)}")
    if run.status is not RunStatus.NEEDS_ATTENTION:
        raise UsageError(f"run {run.run_id} is {run.status}, not needs_attention; "
                         "only runs that need attention can be resolved")
    if action == "skip" and uncertain is None:
        raise UsageError(f"run {run.run_id} has no uncertain effect to skip; use --retry or --fail")


def resolved_record(record: Record, action: str, value: str | None, now_ms: int) -> Record:
    """The uncertain record after an operator settled it (``retry`` or ``skip``)."""
    detail: JSONObject = json.loads(record.detail) if record.detail else {}
    detail["resolution"] = action
    if action == "skip":
        return Record(record.seq, record.kind, record.name, record.digest, RecordState.OK,
                      value if value is not None else "null", record.attempts,
                      record.started_at_ms, now_ms, json.dumps(detail))
    return Record(record.seq, record.kind, record.name, record.digest, record.state,
                  record.value, record.attempts, record.started_at_ms, record.finished_at_ms,
                  json.dumps(detail))


def failed_by_operator(run: Run) -> str:
    error = dict(run.error or {})
    error["resolution"] = "failed by operator (tether resolve --fail)"
    error.setdefault("code", "run.failed")
    error.setdefault("message", "failed by operator")
    return json.dumps(error)


def refuse_signal_if_ended(run: Run) -> None:
    if run.status.is_terminal:
        raise UsageError(f"run {run.run_id} is {run.status}; it takes no more signals")


# -- audit trail and approvals (tether.governance) -------------------------------------------

AUDIT_GENESIS = "0" * 64
"""The ``previous hash`` of a tenant's first audit record."""


def chain_hash(previous: str, body: str) -> str:
    """The hash of an audit record: SHA-256 over the previous record's hash and this body,
    so changing, removing, inserting or moving any record breaks every later link."""
    return hashlib.sha256((previous + body).encode()).hexdigest()


APPROVAL_SIGNAL_PREFIX = "tether.approval:"
APPROVAL_DECISIONS = ("approved", "denied", "expired")


def approval_signal(seq: int) -> str:
    """The signal that wakes a run when the approval of its tool call at ``seq`` is decided."""
    return f"{APPROVAL_SIGNAL_PREFIX}{seq}"


def check_decidable(approval: Approval, status: str, now_ms: int) -> None:
    """Refuse deciding an approval twice, with a status that is not a decision, or (approved
    or denied) once it has expired: a late yes must not reach a call whose time ran out.
    Checked inside the deciding transaction, so it holds whichever process decides."""
    if status not in APPROVAL_DECISIONS:
        raise UsageError(f"an approval is decided as one of {', '.join(APPROVAL_DECISIONS)}, "
                         f"not {status!r}")
    if approval.status != "pending":
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        raise UsageError(f"approval {approval.approval_id} was {approval.status}{by} already")
    if status != "expired" and now_ms >= approval.expires_at_ms:
        raise ApprovalExpired(approval.approval_id, approval.expires_at_ms)

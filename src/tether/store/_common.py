"""Rules both store engines share, kept out of the dialect-specific modules."""

from __future__ import annotations

import json

from tether.errors import UsageError
from tether.store._protocol import Record, RecordState
from tether.types import JSONObject, Run, RunStatus

CHILD_SIGNAL_PREFIX = "tether.child:"


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

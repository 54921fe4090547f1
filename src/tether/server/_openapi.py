"""The OpenAPI 3.1 document of the HTTP API, written out by hand (the routes are plain
Starlette functions) and kept in the repository as ``docs/openapi.json``; a test checks the
two agree and schemathesis checks the server against it."""

from __future__ import annotations

import json
import sys
from typing import Any

from tether.types import RunStatus

VERSION = "1"

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}


def _obj(properties: dict[str, Any], required: list[str] | None = None, *,
         extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": required if required is not None else list(properties)}
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}})}),
    "Run": _obj({
        "run_id": {"type": "string"}, "agent": {"type": "string"},
        "agent_version": {"type": "string"}, "agent_ref": {"type": "string"},
        "input": {"type": "object"}, "status": {"enum": [str(s) for s in RunStatus]},
        "result": {}, "error": {"type": ["object", "null"]}, "thread_id": _NULLABLE_STR,
        "parent_run_id": _NULLABLE_STR, "tenant": {"type": "string"},
        "principal": {"type": "string"}, "created_at_ms": {"type": "integer"},
        "updated_at_ms": {"type": "integer"}, "wake_at_ms": _NULLABLE_INT,
        "waiting_for": _NULLABLE_STR, "owner": _NULLABLE_STR}),
    "RunPage": _obj({"runs": {"type": "array", "items": _ref("Run")},
                     "hidden": {"type": "integer", "minimum": 0,
                                "description": "Runs of this page the policies hid "
                                               "(read_run refused)."},
                     "next_cursor": _NULLABLE_STR}),
    "Record": _obj({
        "seq": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"},
        "digest": {"type": "string"}, "state": {"enum": ["started", "ok", "error"]},
        "value": {}, "attempts": {"type": "integer"}, "started_at_ms": {"type": "integer"},
        "finished_at_ms": _NULLABLE_INT, "detail": {}}),
    "Journal": _obj({"run_id": {"type": "string"},
                     "records": {"type": "array", "items": _ref("Record")}}),
    "StartRun": _obj({
        "agent": {"type": "string", "minLength": 1, "description": "A served agent's name."},
        "input": {"type": "object", "description": "The agent's input."},
        "run_id": {"type": "string", "minLength": 1, "maxLength": 200,
                   "pattern": "^[A-Za-z0-9._:-]+$",
                   "description": "Makes the start idempotent: the same id and input return "
                                  "the same run; a different input is 409 run.conflict."},
        "thread_id": {"type": "string", "minLength": 1, "maxLength": 200}},
        ["agent"], extra=False),
    "CancelRun": _obj({"reason": {"type": "string", "maxLength": 2000}}, [], extra=False),
    "Signal": _obj({"name": {"type": "string", "minLength": 1, "maxLength": 200}, "data": {}},
                   ["name"], extra=False),
    "CancelRuns": _obj({"agent": {"type": "string", "minLength": 1, "maxLength": 200,
                                  "description": "Only runs of this agent."},
                        "reason": {"type": "string", "maxLength": 2000}}, [], extra=False),
    "CancelledRuns": _obj({"cancelled": {"type": "array", "items": _ref("Run")},
                           "refused": {"type": "integer", "minimum": 0,
                                       "description": "Live runs the policies did not let "
                                                      "the caller cancel."}}),
    "Resolve": _obj({"action": {"enum": ["retry", "skip", "fail"]},
                     "value": {"description": "With skip: the uncertain effect's result."}},
                    ["action"], extra=False),
    "Approval": _obj({
        "approval_id": {"type": "string"}, "run_id": {"type": "string"},
        "seq": {"type": "integer"}, "tenant": {"type": "string"},
        "principal": {"type": "string"}, "agent": {"type": "string"},
        "tool": {"type": "string"}, "args": {}, "message": {},
        "policies": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["pending", "approved", "denied", "expired"]},
        "requested_at_ms": {"type": "integer"}, "expires_at_ms": {"type": "integer"},
        "decided_by": _NULLABLE_STR, "reason": _NULLABLE_STR,
        "decided_at_ms": _NULLABLE_INT}),
    "ApprovalList": _obj({"approvals": {"type": "array", "items": _ref("Approval")}}),
    "Decision": _obj({"approve": {"type": "boolean"},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
                     extra=False),
    "AuditPage": _obj({
        "records": {"type": "array", "items": _obj({
            "idx": {"type": "integer"}, "hash": {"type": "string"}, "record": {"type": "object"}})},
        "next_after": _NULLABLE_INT}),
    "AuditVerification": _obj({
        "tenant": {"type": "string"}, "records": {"type": "integer"},
        "intact": {"type": "boolean"},
        "anchored": {"type": "boolean",
                     "description": "Every record is covered by a signed checkpoint."},
        "key": {"enum": ["pinned", "checkpoint.pub"],
                "description": "Which key checked the checkpoints."},
        "problems": {"type": "array", "items": _obj({
            "tenant": {"type": "string"}, "record": _NULLABLE_INT,
            "message": {"type": "string"}, "text": {"type": "string"}})},
        "unanchored": {"type": "array", "items": _obj({
            "tenant": {"type": "string"}, "first": {"type": "integer"},
            "last": {"type": "integer"}, "text": {"type": "string"}})}}),
    "Spend": _obj({
        "tenant": {"type": "string"},
        "source": {"enum": ["ledger", "journals"],
                   "description": "ledger: the budget ledger of a per-tenant budget (every run, "
                                  "this period); journals: the journals of recent runs."},
        "ledger": {"type": "array", "items": _obj({
            "scope": {"type": "string"}, "period": {"enum": ["day", "month"]},
            "unit": {"enum": ["tokens", "cost_usd", "tool_calls", "steps"]},
            "spent": {"type": "number"}, "cap": {"type": "number"}})},
        "journals": {"oneOf": [{"type": "null"}, _obj({
            "runs": {"type": "integer"},
            "model_calls": {"type": "integer"}, "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"}, "cost_usd": {"type": "number"},
            "unpriced_calls": {"type": "integer"},
            "cost_usd_by_agent": {"type": "object",
                                  "additionalProperties": {"type": "number"}}})]}}),
    "Health": _obj({"status": {"type": "string"}}),
    "Caller": _obj({"principal": {"type": "string"}, "tenant": {"type": "string"}}),
    "AgentList": _obj({"agents": {"type": "array", "items": _obj({
        "name": {"type": "string"}, "version": {"type": "string"}})}}),
}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_content(_ref("Error"))}


_AUTH_ERRORS = {"401": _error("No valid API key (auth.unauthenticated).")}
_RUN_ERRORS = {**_AUTH_ERRORS,
               "403": _error("A policy refuses it (policy.denied)."),
               "404": _error("No such run in the caller's tenant (run.not_found).")}


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": _json_content(_ref(schema))}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json_content(_ref(schema))}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_APPROVAL_ID = {"name": "approval_id", "in": "path", "required": True,
                "schema": {"type": "string"}}
_USAGE = {"400": _error("Bad input (usage); the message says what to change.")}


def _op(op_id: str, summary: str, responses: dict[str, Any], *, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of ``/v1``."""
    statuses = {"enum": [str(s) for s in RunStatus]}
    paths: dict[str, Any] = {
        "/v1/whoami": {"get": _op("whoami", "The principal and tenant the API key stands "
                                            "for.", {"200": _ok("Caller"), **_AUTH_ERRORS})},
        "/v1/agents": {"get": _op("listAgents", "The agents this server may start.", {
            "200": _ok("AgentList"), **_AUTH_ERRORS})},
        "/v1/runs": {
            "post": _op("startRun", "Start a run of a served agent (idempotent with run_id).", {
                "201": _ok("Run", "Created and started."),
                "200": _ok("Run", "A run with this id and input exists already."),
                **_USAGE, **_RUN_ERRORS,
                "409": _error("The run id is taken by a different input (run.conflict).")},
                body=_body("StartRun")),
            "get": _op("listRuns", "List the tenant's runs, newest first.", {
                "200": _ok("RunPage"), **_USAGE, **_AUTH_ERRORS}, params=[
                _query("status", statuses, "Only runs in this status."),
                _query("agent", {"type": "string"}, "Only runs of this agent."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200},
                       "Page size (default 50)."),
                _query("cursor", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
                       "next_cursor of the previous page, unchanged.")]),
        },
        "/v1/runs/cancel": {"post": _op(
            "cancelRuns", "The kill switch: cancel every live run of the tenant (of an agent) "
                          "that the caller may cancel.", {
                "200": _ok("CancelledRuns"), **_USAGE, **_AUTH_ERRORS},
            body=_body("CancelRuns", required=False))},
        "/v1/runs/{run_id}": {"get": _op("getRun", "One run.", {
            "200": _ok("Run"), **_RUN_ERRORS}, params=[_RUN_ID])},
        "/v1/runs/{run_id}/journal": {"get": _op("getJournal", "Every journal record of a run.", {
            "200": _ok("Journal"), **_RUN_ERRORS}, params=[_RUN_ID])},
        "/v1/runs/{run_id}/cancel": {"post": _op("cancelRun", "Cancel a run that has not ended.", {
            "200": _ok("Run"), **_USAGE, **_RUN_ERRORS},
            params=[_RUN_ID], body=_body("CancelRun", required=False))},
        "/v1/runs/{run_id}/signals": {"post": _op("signalRun", "Deliver a signal to a run.", {
            "200": _ok("Run"), **_USAGE, **_RUN_ERRORS},
            params=[_RUN_ID], body=_body("Signal"))},
        "/v1/runs/{run_id}/resolve": {"post": _op(
            "resolveRun", "Settle a run in needs_attention: retry, skip (with a value) or "
                          "fail.", {"200": _ok("Run"), **_USAGE, **_RUN_ERRORS},
            params=[_RUN_ID], body=_body("Resolve"))},
        "/v1/runs/{run_id}/events": {"get": _op(
            "runEvents", "The run's events as server-sent events (resumable).", {
                "200": {"description": "event: record (id: seq), run, live, end (id: last "
                                       "seq + 1).",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                "204": {"description": "The run ended and the client has every event."},
                **_USAGE, **_RUN_ERRORS},
            params=[_RUN_ID,
                    _query("after", {"type": "integer", "minimum": 0},
                           "Resume after this event id (as Last-Event-ID does).")])},
        "/v1/approvals": {"get": _op("listApprovals", "Tool calls held for a person.", {
            "200": _ok("ApprovalList"), **_USAGE, **_AUTH_ERRORS}, params=[
            _query("status", {"enum": ["pending", "approved", "denied", "expired", "all"]},
                   "Default pending."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Default 100.")])},
        "/v1/approvals/{approval_id}": {"get": _op("getApproval", "One approval request.", {
            "200": _ok("Approval"), **_AUTH_ERRORS,
            "404": _error("approval.not_found")}, params=[_APPROVAL_ID])},
        "/v1/approvals/{approval_id}/decision": {"post": _op(
            "decideApproval", "Approve or deny a held call as the caller.", {
                "200": _ok("Approval"), **_USAGE, **_AUTH_ERRORS,
                "403": _error("The caller may not approve this tool (policy.denied)."),
                "404": _error("approval.not_found")},
            params=[_APPROVAL_ID], body=_body("Decision"))},
        "/v1/audit": {"get": _op("auditRecords", "The tenant's audit records, by index.", {
            "200": _ok("AuditPage"), **_USAGE, **_AUTH_ERRORS}, params=[
            _query("after", {"type": "integer", "minimum": 0}, "Records after this index."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Default 100.")])},
        "/v1/audit/verify": {"get": _op("auditVerify", "Check the tenant's hash chain and the "
                                        "signed checkpoints.", {
            "200": _ok("AuditVerification"), **_USAGE, **_AUTH_ERRORS})},
        "/v1/spend": {"get": _op("spend", "The tenant's spend: its budget ledger, or its recent "
                                           "runs' journals.", {
            "200": _ok("Spend"), **_USAGE, **_AUTH_ERRORS}, params=[
            _query("runs", {"type": "integer", "minimum": 1, "maximum": 1000},
                   "How many recent runs the journals are summed over (default 100).")])},
        "/healthz": {"get": _op("healthz", "The process is up.", {"200": _ok("Health")},
                                public=True)},
        "/readyz": {"get": _op("readyz", "The store answers.", {
            "200": _ok("Health"), "503": _error("The store does not answer (store).")},
            public=True)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tether", "version": VERSION,
                 "description": "Durable, governed agent runs over HTTP. Errors are "
                                "{\"error\": {\"code\", \"message\"}} with stable codes."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "description": "tk_... API key"}}},
        "security": [{"apiKey": []}],
    }


def render() -> str:
    """The document as it is kept in ``docs/openapi.json``."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m tether.server._openapi > docs/openapi.json
    sys.stdout.write(render())

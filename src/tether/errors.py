"""Every error Tether raises, in one tree.

Each class has a stable ``code`` (what the CLI prints and the HTTP API returns) and a
``retryable`` flag (whether trying the same thing again may succeed)::

    TetherError                      internal
    ├── UsageError                   usage               bad input from a person or a program
    │   ├── ConfigError              config
    │   ├── RunNotFound              run.not_found
    │   ├── RunConflict              run.conflict        same run id, different agent or input
    │   ├── AgentNotFound            agent.not_found
    │   ├── PolicyInvalid            policy.invalid      policy, schema or entity files do not load
    │   ├── ApprovalNotFound         approval.not_found
    │   └── ApprovalExpired          approval.expired    decided after the request expired
    ├── StoreError                   store               the database failed (retryable)
    │   ├── StoreCorrupt             store.corrupt       not a Tether database, or damaged
    │   ├── SchemaTooNew             store.schema_too_new
    │   └── LeaseLost                store.lease_lost    another worker owns the run now
    ├── PolicyDenied                 policy.denied       no policy permits it, one forbids it, or
    │                                                    evaluating one failed (fail closed)
    ├── RateLimited                  limit.rate          over a rate limit; carries retry_after_seconds
    │                                                    (retryable)
    ├── BudgetExceeded               limit.budget        a budget would be overspent; names the scope
    ├── ResidencyViolation           residency.violation the call would take the tenant's data out of
    │   │                                                its allowed regions
    │   └── NoHomeRegion             residency.no_home_region  stores are kept by region and the
    │                                                    tenant has none of them (fail closed)
    ├── Unauthenticated              auth.unauthenticated  no API key, or one that is unknown
    ├── NonDeterminismError          journal.nondeterminism
    ├── ToolError                    tool.failed         a tool raised; carries its type and message
    │   ├── ToolArgumentError        tool.bad_arguments  the arguments do not match the schema
    │   ├── ToolTimeout              tool.timeout        (retryable)
    │   ├── UnknownTool              tool.unknown
    │   └── MCPServerError           tool.mcp_server     the MCP server is down, or went away
    │                                                    during the call (retryable)
    ├── SandboxError                 sandbox.failed      the sandbox broke or could not start
    │   ├── SandboxUnavailable       sandbox.unavailable a layer the profile needs is missing here
    │   └── SandboxUnsafe            sandbox.unsafe      the payload would run as root or with
    │                                                    capabilities: refused
    ├── ModelError                   model.failed        names the model and its base_url
    │   ├── ModelRequestRejected     model.bad_request   400/422: the provider refused the request
    │   │   └── ContextOverflow      model.context_overflow  the conversation is too long
    │   ├── ModelAuthError           model.auth          401/403: the key is missing, wrong or not allowed
    │   ├── ModelNotFound            model.not_found     404: no such model or endpoint
    │   ├── ModelRateLimited         model.rate_limited  429 after every retry (retryable)
    │   ├── ModelUnavailable         model.unavailable   5xx, timeout, dropped connection (retryable)
    │   └── ModelBadResponse         model.bad_response  the reply could not be read
    ├── StepError                    step.failed         a ``ctx.step`` function raised
    ├── WaitTimeout                  run.wait_timeout    ``ctx.wait`` saw no signal in time
    ├── ChildRunFailed               run.child_failed
    ├── ToolLoopExhausted            agent.max_steps     the model never gave a final answer
    └── RunFailed                    run.failed          ``Runtime.run`` on a run that did not complete

    RunCancelled (BaseException)     run.cancelled       so ``except Exception`` cannot swallow it

Errors raised into agent code are rebuilt from the journal on replay, so they carry only
JSON-able fields: a replayed run sees the same error it saw the first time.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TetherError(Exception):
    """Base class of every Tether error; ``code`` is stable and machine-readable."""

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """The error as it is journaled and shown: code, type and message."""
        return {"code": self.code, "type": type(self).__name__, "message": self.message}


class UsageError(TetherError):
    """The caller asked for something that cannot be done as asked."""

    code = "usage"


class ConfigError(UsageError):
    """A setting is missing, malformed or out of range."""

    code = "config"


class RunNotFound(UsageError):
    code = "run.not_found"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r} (list runs with `tether runs ls`)")
        self.run_id = run_id


class RunConflict(UsageError):
    """A run id was reused for a different agent or input: starts are idempotent only for the same call."""

    code = "run.conflict"

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"run {run_id!r} already exists with {detail}; choose another run id")
        self.run_id = run_id


class AgentNotFound(UsageError):
    code = "agent.not_found"


class PolicyInvalid(ConfigError):
    """The governance files (policies, schema, entities) cannot be loaded as they are."""

    code = "policy.invalid"


class ApprovalNotFound(UsageError):
    code = "approval.not_found"

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval with id {approval_id!r} (list them with "
                         "`tether approvals ls`)")
        self.approval_id = approval_id


class ApprovalExpired(UsageError):
    """A person decided an approval request after it expired: the call stays refused (the
    run denies it when it next runs); the agent may ask again."""

    code = "approval.expired"

    def __init__(self, approval_id: str, expires_at_ms: int) -> None:
        super().__init__(f"approval {approval_id!r} expired at {expires_at_ms} ms (epoch) and "
                         "can no longer be decided; the run treats the call as refused")
        self.approval_id = approval_id
        self.expires_at_ms = expires_at_ms


class PolicyDenied(TetherError):
    """A policy refused an action. ``policies`` names the ``@id`` of every policy that decided
    (empty when nothing permits it: default deny); ``errors`` holds evaluation errors, which
    deny whatever the policies said."""

    code = "policy.denied"

    def __init__(self, message: str, *, action: str = "", resource: str = "",
                 policies: list[str] | None = None, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.action, self.resource = action, resource
        self.policies, self.errors = list(policies or []), list(errors or [])

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "action": self.action, "resource": self.resource,
                "policies": self.policies, "errors": self.errors}


class Unauthenticated(TetherError):
    """An HTTP request came without a valid API key (``Authorization: Bearer tk_...``)."""

    code = "auth.unauthenticated"


class RateLimited(TetherError):
    """A rate limit refused the call, or would have held it longer than its maximum wait.
    ``retry_after_seconds`` says when the same call would be admitted."""

    code = "limit.rate"
    retryable = True

    def __init__(self, message: str, *, limit: str = "", key: str = "",
                 retry_after_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.limit, self.key, self.retry_after_seconds = limit, key, retry_after_seconds

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "limit": self.limit, "key": self.key,
                "retry_after_seconds": self.retry_after_seconds}


class BudgetExceeded(TetherError):
    """Spending ``requested`` more on ``scope`` would pass its ``limit`` (``spent`` so far;
    amounts in the scope's unit: tokens, calls, or micro-USD for cost)."""

    code = "limit.budget"

    def __init__(self, message: str, *, scope: str = "", limit: int = 0, spent: int = 0,
                 requested: int = 0) -> None:
        super().__init__(message)
        self.scope, self.limit, self.spent, self.requested = scope, limit, spent, requested

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "scope": self.scope, "limit": self.limit,
                "spent": self.spent, "requested": self.requested}


class ResidencyViolation(TetherError):
    """A model, tool or MCP server outside the tenant's allowed regions (or with no region
    declared while the tenant is restricted) was refused."""

    code = "residency.violation"

    def __init__(self, message: str, *, tenant: str = "", resource: str = "",
                 region: str | None = None, allowed: list[str] | None = None) -> None:
        super().__init__(message)
        self.tenant, self.resource, self.region = tenant, resource, region
        self.allowed = list(allowed or [])

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "tenant": self.tenant, "resource": self.resource,
                "region": self.region, "allowed": self.allowed}


class NoHomeRegion(ResidencyViolation):
    """Stores are configured by region (``[regions.NAME]``) and the tenant has no home region
    among them: with nowhere its data may be kept, it is kept nowhere."""

    code = "residency.no_home_region"


class StoreError(TetherError):
    """The database could not do what was asked; nothing half-done was kept."""

    code = "store"
    retryable = True


class StoreCorrupt(StoreError):
    code = "store.corrupt"
    retryable = False


class SchemaTooNew(StoreError):
    code = "store.schema_too_new"
    retryable = False

    def __init__(self, location: str, found: int, supported: int) -> None:
        super().__init__(
            f"{location} has schema version {found}, this Tether understands up to {supported}: "
            "upgrade Tether (the file was not modified)"
        )
        self.found, self.supported = found, supported


class LeaseLost(StoreError):
    """This worker no longer owns the run (its lease expired, or it was cancelled or settled)."""

    code = "store.lease_lost"
    retryable = False

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} is no longer owned by this worker; its writes were refused")
        self.run_id = run_id


class NonDeterminismError(TetherError):
    """Replay asked for a different effect than the journal recorded at that seq."""

    code = "journal.nondeterminism"

    def __init__(self, run_id: str, seq: int, *, recorded: str, attempted: str) -> None:
        super().__init__(
            f"run {run_id} seq {seq}: the journal recorded {recorded}, the code now asks for "
            f"{attempted}; deploy the agent version the run started on, or settle the run with "
            "`tether resolve`"
        )
        self.run_id, self.seq, self.recorded, self.attempted = run_id, seq, recorded, attempted


class ToolError(TetherError):
    """A tool call failed. ``error_type`` names the exception the tool raised."""

    code = "tool.failed"

    def __init__(self, tool: str, message: str, *, error_type: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.tool, self.error_type, self.attempts = tool, error_type or type(self).__name__, attempts

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "tool": self.tool, "error_type": self.error_type,
                "attempts": self.attempts}


class ToolArgumentError(ToolError):
    """The arguments do not fit the tool's schema; the message says which and how."""

    code = "tool.bad_arguments"


class ToolTimeout(ToolError):
    code = "tool.timeout"
    retryable = True


class UnknownTool(ToolError):
    code = "tool.unknown"


class MCPServerError(ToolError):
    """The MCP server behind a tool could not be reached: it would not start, it is being
    restarted, or it went away during the call (whose outcome is then unknown). Retryable: the
    server is restarted with backoff."""

    code = "tool.mcp_server"
    retryable = True


class SandboxError(TetherError):
    """A sandbox could not be set up, or broke; nothing ran outside it."""

    code = "sandbox.failed"


class SandboxUnavailable(SandboxError):
    """A layer the profile needs is missing on this machine; the message says what to install
    (``tether doctor`` lists every layer)."""

    code = "sandbox.unavailable"


class SandboxUnsafe(SandboxError):
    """Checked from the host, a sandboxed process ran as uid 0 or held capabilities: it was
    killed before the payload started."""

    code = "sandbox.unsafe"


class ModelError(TetherError):
    """A model call failed. Provider errors name the model, where it was called and, for HTTP
    errors, the status; ``attempts`` counts the tries made before giving up."""

    code = "model.failed"

    def __init__(self, message: str, *, model: str = "", base_url: str = "",
                 status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.model, self.base_url, self.status, self.attempts = model, base_url, status, attempts

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.model:  # only provider errors carry these; older records have none
            data.update(model=self.model, base_url=self.base_url, status=self.status,
                        attempts=self.attempts)
        return data


class ModelRequestRejected(ModelError):
    code = "model.bad_request"


class ContextOverflow(ModelRequestRejected):
    code = "model.context_overflow"


class ModelAuthError(ModelError):
    code = "model.auth"


class ModelNotFound(ModelError):
    code = "model.not_found"


class ModelRateLimited(ModelError):
    code = "model.rate_limited"
    retryable = True


class ModelUnavailable(ModelError):
    code = "model.unavailable"
    retryable = True


class ModelBadResponse(ModelError):
    code = "model.bad_response"


class StepError(TetherError):
    """A ``ctx.step`` function raised; ``error_type`` names the exception."""

    code = "step.failed"

    def __init__(self, step: str, message: str, *, error_type: str = "") -> None:
        super().__init__(message)
        self.step, self.error_type = step, error_type

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "step": self.step, "error_type": self.error_type}


class WaitTimeout(TetherError):
    code = "run.wait_timeout"

    def __init__(self, signal: str, timeout_seconds: float) -> None:
        super().__init__(f"no signal {signal!r} arrived within {timeout_seconds:g} s")
        self.signal, self.timeout_seconds = signal, timeout_seconds

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "signal": self.signal, "timeout_seconds": self.timeout_seconds}


class ChildRunFailed(TetherError):
    code = "run.child_failed"

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        reason = (error or {}).get("message", "")
        super().__init__(f"child run {run_id} ended {status}" + (f": {reason}" if reason else ""))
        self.run_id, self.status, self.error = run_id, status, error


class ToolLoopExhausted(TetherError):
    code = "agent.max_steps"


class RunFailed(TetherError):
    """``Runtime.run`` waited for a run that ended without a result."""

    code = "run.failed"

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        reason = (error or {}).get("message", "")
        super().__init__(f"run {run_id} ended {status}" + (f": {reason}" if reason else ""))
        self.run_id, self.status, self.error = run_id, status, error


class RunCancelled(BaseException):
    """The run was cancelled. A BaseException so that ``except Exception`` in agent code
    cannot swallow it."""

    code: ClassVar[str] = "run.cancelled"


ERROR_TYPES: dict[str, type[TetherError]] = {
    cls.__name__: cls
    for cls in (TetherError, UsageError, ConfigError, StoreError, WaitTimeout)
}

MODEL_ERROR_TYPES: dict[str, type[ModelError]] = {
    cls.__name__: cls
    for cls in (ModelError, ModelRequestRejected, ContextOverflow, ModelAuthError, ModelNotFound,
                ModelRateLimited, ModelUnavailable, ModelBadResponse)
}


def error_from_json(data: dict[str, Any]) -> TetherError:
    """Rebuild an error raised into agent code from its journaled form (replay)."""
    kind = data.get("type", "")
    message = str(data.get("message", ""))
    if kind in ("ToolError", "ToolArgumentError", "ToolTimeout", "UnknownTool",
                "MCPServerError") or "tool" in data:
        tool_cls: type[ToolError] = {
            "ToolArgumentError": ToolArgumentError, "ToolTimeout": ToolTimeout,
            "UnknownTool": UnknownTool, "MCPServerError": MCPServerError,
        }.get(kind, ToolError)
        return tool_cls(str(data.get("tool", "")), message,
                        error_type=str(data.get("error_type", "")),
                        attempts=int(data.get("attempts", 1)))
    if kind == "StepError" or "step" in data:
        return StepError(str(data.get("step", "")), message, error_type=str(data.get("error_type", "")))
    if kind in MODEL_ERROR_TYPES:
        status = data.get("status")
        return MODEL_ERROR_TYPES[kind](
            message, model=str(data.get("model", "")), base_url=str(data.get("base_url", "")),
            status=None if status is None else int(status), attempts=int(data.get("attempts", 1)))
    if kind == "PolicyDenied":
        return PolicyDenied(message, action=str(data.get("action", "")),
                            resource=str(data.get("resource", "")),
                            policies=[str(p) for p in data.get("policies") or []],
                            errors=[str(e) for e in data.get("errors") or []])
    if kind == "RateLimited":
        return RateLimited(message, limit=str(data.get("limit", "")), key=str(data.get("key", "")),
                           retry_after_seconds=float(data.get("retry_after_seconds", 0)))
    if kind == "BudgetExceeded":
        return BudgetExceeded(message, scope=str(data.get("scope", "")),
                              limit=int(data.get("limit", 0)), spent=int(data.get("spent", 0)),
                              requested=int(data.get("requested", 0)))
    if kind in ("ResidencyViolation", "NoHomeRegion"):
        region = data.get("region")
        residency_cls = NoHomeRegion if kind == "NoHomeRegion" else ResidencyViolation
        return residency_cls(message, tenant=str(data.get("tenant", "")),
                             resource=str(data.get("resource", "")),
                             region=None if region is None else str(region),
                             allowed=[str(r) for r in data.get("allowed") or []])
    if kind == "WaitTimeout":
        return WaitTimeout(str(data.get("signal", "")), float(data.get("timeout_seconds", 0)))
    return ERROR_TYPES.get(kind, TetherError)(message)

"""Every error Tether raises, in one tree.

Each class has a stable ``code`` (what the CLI prints and the HTTP API returns) and a
``retryable`` flag (whether trying the same thing again may succeed)::

    TetherError                      internal
    ├── UsageError                   usage               bad input from a person or a program
    │   ├── ConfigError              config
    │   ├── RunNotFound              run.not_found
    │   ├── RunConflict              run.conflict        same run id, different agent or input
    │   └── AgentNotFound            agent.not_found
    ├── StoreError                   store               the database failed (retryable)
    │   ├── StoreCorrupt             store.corrupt       not a Tether database, or damaged
    │   ├── SchemaTooNew             store.schema_too_new
    │   └── LeaseLost                store.lease_lost    another worker owns the run now
    ├── NonDeterminismError          journal.nondeterminism
    ├── ToolError                    tool.failed         a tool raised; carries its type and message
    │   ├── ToolArgumentError        tool.bad_arguments  the arguments do not match the schema
    │   ├── ToolTimeout              tool.timeout        (retryable)
    │   └── UnknownTool              tool.unknown
    ├── ModelError                   model.failed
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


class ModelError(TetherError):
    code = "model.failed"


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
    for cls in (TetherError, UsageError, ConfigError, StoreError, ModelError, WaitTimeout)
}


def error_from_json(data: dict[str, Any]) -> TetherError:
    """Rebuild an error raised into agent code from its journaled form (replay)."""
    kind = data.get("type", "")
    message = str(data.get("message", ""))
    if kind in ("ToolError", "ToolArgumentError", "ToolTimeout", "UnknownTool") or "tool" in data:
        tool_cls: type[ToolError] = {
            "ToolArgumentError": ToolArgumentError, "ToolTimeout": ToolTimeout,
            "UnknownTool": UnknownTool,
        }.get(kind, ToolError)
        return tool_cls(str(data.get("tool", "")), message,
                        error_type=str(data.get("error_type", "")),
                        attempts=int(data.get("attempts", 1)))
    if kind == "StepError" or "step" in data:
        return StepError(str(data.get("step", "")), message, error_type=str(data.get("error_type", "")))
    if kind == "WaitTimeout":
        return WaitTimeout(str(data.get("signal", "")), float(data.get("timeout_seconds", 0)))
    return ERROR_TYPES.get(kind, TetherError)(message)

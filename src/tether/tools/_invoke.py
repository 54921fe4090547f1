from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from tether import _json
from tether.errors import TetherError, ToolError, ToolTimeout
from tether.sandbox import Sandbox
from tether.tools._tool import ProgressCallback, Tool, ToolContext

OnRetry = Callable[[int, ToolError, float], Awaitable[None]]
"""Called after failed attempt ``n`` with its error and the delay before the next one."""


async def _sandboxed(tool: Tool, kwargs: dict[str, Any], sandbox: Sandbox | None,
                     run: tuple[str, str] | None) -> Any:
    if sandbox is None:
        raise ToolError(tool.name, f"{tool.name} runs in sandbox profile {tool.sandbox!r}, but "
                                   "this runtime was given no sandbox")
    kwargs = dict(kwargs)
    context = kwargs.pop(tool.context_param) if tool.context_param is not None else None
    outcome = await sandbox.call(
        tool.fn.__module__, tool.fn.__qualname__, _json.normalize(kwargs),  # type: ignore[arg-type]
        profile=tool.sandbox or "default", timeout_seconds=tool.timeout, run=run,
        context=None if context is None else {  # what crosses into the sandbox: data only
            "run_id": context.run_id, "seq": context.seq, "attempt": context.attempt,
            "idempotency_key": context.idempotency_key, "tool": context.tool})
    if outcome.ok:
        return outcome.result
    if outcome.timed_out:
        raise ToolTimeout(tool.name, f"{tool.name} did not finish within its time in the "
                                     f"sandbox; every process of it was killed")
    detail = f"\n\n{outcome.traceback.rstrip()}" if outcome.traceback else ""
    raise ToolError(tool.name, f"{outcome.error_type}: {outcome.message}{detail}",
                    error_type=outcome.error_type)


async def _attempt(tool: Tool, kwargs: dict[str, Any], sandbox: Sandbox | None,
                   run: tuple[str, str] | None) -> Any:
    if tool.sandbox is not None:
        return await _sandboxed(tool, kwargs, sandbox, run)
    if tool.is_async:
        return await tool.fn(**kwargs)
    # A sync tool runs in a thread so it cannot block the event loop. On timeout the thread is
    # abandoned (Python cannot kill a thread); hard limits are the sandbox's job.
    return await anyio.to_thread.run_sync(functools.partial(tool.fn, **kwargs),
                                          abandon_on_cancel=True)


async def _timed(tool: Tool, kwargs: dict[str, Any], sandbox: Sandbox | None,
                 run: tuple[str, str] | None) -> Any:
    if tool.timeout is None:
        return await _attempt(tool, kwargs, sandbox, run)
    try:
        with anyio.fail_after(tool.timeout):
            return await _attempt(tool, kwargs, sandbox, run)
    except TimeoutError:
        raise ToolTimeout(tool.name, f"{tool.name} did not finish within "
                                     f"{tool.timeout:g} s") from None


def as_tool_error(tool: Tool, exc: Exception, attempts: int) -> ToolError:
    """Any exception a tool raised, as the ``ToolError`` the agent (and journal) sees."""
    if isinstance(exc, ToolError):
        exc.attempts = attempts
        return exc
    if isinstance(exc, TetherError):
        return ToolError(tool.name, exc.message, error_type=type(exc).__name__, attempts=attempts)
    return ToolError(tool.name, f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__,
                     attempts=attempts)


def _retryable(tool: Tool, exc: Exception) -> bool:
    if isinstance(exc, TetherError) and not exc.retryable:
        return False
    return isinstance(exc, tool.retry.retry_on)


async def invoke(tool: Tool, kwargs: dict[str, Any], *, run_id: str, seq: int,
                 first_attempt: int, sleep: Callable[[float], Awaitable[None]],
                 on_retry: OnRetry, limiter: anyio.CapacityLimiter | None = None,
                 on_progress: ProgressCallback | None = None,
                 sandbox: Sandbox | None = None, tenant: str | None = None) -> Any:
    """Call a tool until it succeeds or its retry policy gives up.

    Args:
        kwargs: validated arguments (the ``ToolContext`` parameter is added here).
        first_attempt: 1, or more when a crash interrupted earlier attempts of this call.
        sleep: how to wait between attempts (a fake clock's in tests).
        on_retry: told of each failed attempt that will be retried.
        limiter: the tool's concurrency cap in this process, if it has one.
        sandbox: where tools declared with a sandbox profile run.
        tenant: the run's tenant (a profile's per-run workspace belongs to tenant and run).
        on_progress: told of the progress the tool reports through its ``ToolContext``.

    Raises:
        ToolError: the last attempt's failure (``ToolTimeout`` when it ran out of time).
    """
    attempt = first_attempt
    run = None if tenant is None else (tenant, run_id)
    while True:
        if tool.context_param is not None:
            kwargs[tool.context_param] = ToolContext(run_id, seq, attempt, f"{run_id}:{seq}",
                                                     tool.name, on_progress)
        try:
            if limiter is None:
                if tool.is_async and tool.timeout is None and tool.sandbox is None:
                    return await tool.fn(**kwargs)  # the common case: two frames fewer
                return await _timed(tool, kwargs, sandbox, run)
            async with limiter:
                return await _timed(tool, kwargs, sandbox, run)
        except Exception as exc:
            error = as_tool_error(tool, exc, attempt)
            # max_attempts counts attempts across crashes too; a call resumed after a crash
            # during its last attempt still gets that one attempt.
            if attempt >= max(tool.retry.max_attempts, first_attempt) or not _retryable(tool, exc):
                raise error from exc
            delay = tool.retry.delay_after(attempt)
            await on_retry(attempt, error, delay)
            await sleep(delay)
            attempt += 1

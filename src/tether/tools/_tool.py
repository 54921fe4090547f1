from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

import pydantic

from tether.errors import ConfigError, ToolArgumentError
from tether.models import ToolSpec
from tether.tools._schema import arguments_model, docstring_parts, explain, json_schema
from tether.types import JSONObject


@dataclass(frozen=True, slots=True)
class Retry:
    """When and how often a failed tool call is tried again.

    Args:
        max_attempts: attempts in all, the first included (1 means no retry).
        initial_delay: seconds before the second attempt.
        backoff: each further delay is the previous one times this.
        max_delay: no delay is longer than this many seconds.
        retry_on: exception types worth another attempt. A Tether error marked not
            retryable (bad arguments, say) is never retried.
        jitter: each delay is drawn from ``[delay * (1 - jitter), delay]``, so many runs that
            failed together do not retry together.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("Retry.max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.backoff < 1:
            raise ConfigError("Retry delays must not be negative and backoff must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("Retry.jitter must be between 0 and 1")

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        return delay * (1 - self.jitter * (rng or random).random())


NO_RETRY = Retry(max_attempts=1)


ProgressCallback = Callable[[float, float | None, str | None], None]
"""Receives ``(progress, total, message)`` from a running tool."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Injected into a tool parameter annotated ``tether.ToolContext``.

    ``idempotency_key`` is ``run_id:seq``: the same on every attempt and after a crash, so a
    tool can hand it to an API that deduplicates (payments, e-mail, tickets).
    """

    run_id: str
    seq: int
    attempt: int
    idempotency_key: str
    tool: str
    on_progress: ProgressCallback | None = field(default=None, repr=False, compare=False)

    def progress(self, progress: float, total: float | None = None,
                 message: str | None = None) -> None:
        """Say how far the call has got: published as a ``tool.progress`` event (not
        journaled: a replay does not repeat it)."""
        if self.on_progress is not None:
            self.on_progress(progress, total, message)


class Tool:
    """A function registered as a tool. Calling the object calls the function directly."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None, timeout: float | None = None,
                 retry: Retry | None = None, side_effects: bool = True,
                 idempotent: bool = False, max_concurrency: int | None = None,
                 sandbox: str | None = None) -> None:
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"tool {fn.__name__}: timeout must be positive seconds")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"tool {fn.__name__}: max_concurrency must be at least 1")
        self.fn = fn
        self.name = name or fn.__name__
        summary, _ = docstring_parts(fn)
        self.description = description if description is not None else summary
        self.timeout = timeout
        self.retry = retry or NO_RETRY
        self.side_effects = side_effects
        self.idempotent = idempotent
        self.max_concurrency = max_concurrency
        if sandbox is not None and (fn.__module__ == "__main__" or "<locals>" in fn.__qualname__):
            raise ConfigError(f"tool {fn.__name__}: a sandboxed tool must be defined at the top "
                              "level of an importable module (the sandboxed worker imports it)")
        self.sandbox = sandbox
        self.is_async = inspect.iscoroutinefunction(fn)
        self._model, injected = arguments_model(
            fn, self.name, skip=lambda annotation: annotation is ToolContext)
        self.context_param = injected[0] if injected else None
        # Read once: pydantic's class-level ``model_fields`` goes through a descriptor that
        # cost 1.5% of the event loop at 10,000 concurrent runs (B2) when read on every call.
        self._fields = tuple(self._model.model_fields)
        self.spec = ToolSpec(self.name, self.description, json_schema(self._model))
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<tether.Tool {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def validate(self, args: JSONObject) -> dict[str, Any]:
        """Check arguments against the schema; returns keyword arguments for the function.

        Raises:
            ToolArgumentError: saying which argument is wrong and why (a model can correct it).
        """
        if not isinstance(args, dict):
            raise ToolArgumentError(self.name, f"arguments must be a JSON object, not "
                                               f"{type(args).__name__}")
        try:
            parsed = self._model.model_validate(args)
        except pydantic.ValidationError as exc:
            raise ToolArgumentError(self.name, f"invalid arguments for {self.name}: "
                                               f"{explain(exc)}") from None
        return {field: getattr(parsed, field) for field in self._fields}


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(*, name: str | None = None, description: str | None = None,
         timeout: float | None = None, retry: Retry | None = None, side_effects: bool = True,
         idempotent: bool = False, max_concurrency: int | None = None,
         sandbox: str | None = None) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, timeout: float | None = None,
         retry: Retry | None = None, side_effects: bool = True, idempotent: bool = False,
         max_concurrency: int | None = None,
         sandbox: str | None = None) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a sync or async function as a tool.

    Args:
        name: the tool's name for models and journals (default: the function's name).
        description: what the tool does, for models (default: the docstring's first paragraph).
        timeout: seconds one attempt may take. An async tool is cancelled; a sync tool runs in
            a thread that cannot be killed, so the call fails while the thread finishes.
        retry: a ``Retry`` policy (default: one attempt).
        side_effects: whether the tool changes the world. A side-effecting call's intent is
            durable before it runs, so a crash never repeats it silently.
        idempotent: whether calling again with the same ``ToolContext.idempotency_key`` is
            safe; such a call interrupted by a crash is retried instead of flagged.
        max_concurrency: most calls of this tool in flight at once in one process.
        sandbox: a sandbox profile name: the function then runs in a sandboxed worker process
            (arguments and result travel as JSON; an exception comes back as a tool error with
            its traceback). The function must live at the top level of an importable module.
    """
    options = {"name": name, "description": description, "timeout": timeout, "retry": retry,
               "side_effects": side_effects, "idempotent": idempotent,
               "max_concurrency": max_concurrency, "sandbox": sandbox}
    if fn is not None:
        return Tool(fn, **options)  # type: ignore[arg-type]

    def decorate(f: Callable[..., Any]) -> Tool:
        return Tool(f, **options)  # type: ignore[arg-type]
    return decorate

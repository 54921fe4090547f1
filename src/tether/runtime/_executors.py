"""The last stage of the pipeline: where an effect acts on the world."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from tether._clock import Clock
from tether.errors import ModelError, StepError, TetherError, ToolError
from tether.models import Model, ModelRequest, ToolSpec
from tether.runtime._events import EventBus
from tether.runtime._pipeline import Effect
from tether.sandbox import Sandbox
from tether.store import Commit, RecordState
from tether.tools import Tool, invoke
from tether.types import JSONObject, Reply

if TYPE_CHECKING:
    from tether.runtime._agent import Agent


@dataclass(slots=True)
class ToolRequest:
    tool: Tool
    args: JSONObject
    kwargs: dict[str, Any] | None = None  # set by ValidateStage


@dataclass(slots=True)
class ModelCall:
    model: Model
    messages: list[JSONObject]
    tools: list[ToolSpec]
    call_index: int


@dataclass(slots=True)
class StepCall:
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(slots=True)
class ChildStart:
    agent: Agent
    input: JSONObject
    run_id: str


StartChild = Callable[[Effect, "ChildStart"], Awaitable[str]]
LimiterFor = Callable[[Tool], "anyio.CapacityLimiter | None"]


class Executor:
    """Dispatches an effect to the code that carries it out, by kind."""

    def __init__(self, *, clock: Clock, bus: EventBus, limiter_for: LimiterFor,
                 start_child: StartChild, sandbox: Sandbox | None = None) -> None:
        self._clock = clock
        self._bus = bus
        self._limiter_for = limiter_for
        self._start_child = start_child
        self._sandbox = sandbox

    def by_kind(self) -> dict[str, Callable[[Effect], Awaitable[Any]]]:
        """The executor of each effect kind."""
        return {"tool": self._tool, "llm": self._llm, "step": self._step,
                "start": self._start}

    async def _start(self, effect: Effect) -> JSONObject:
        return {"run_id": await self._start_child(effect, effect.request)}

    async def _tool(self, effect: Effect) -> Any:
        request: ToolRequest = effect.request
        run_id = effect.scope.run.run_id
        journal = effect.scope.journal

        async def on_retry(attempt: int, error: ToolError, delay: float) -> None:
            effect.detail.setdefault("failed_attempts", []).append(
                {"attempt": attempt, "error": error.message, "retry_in_seconds": round(delay, 3)})
            effect.attempts = attempt + 1
            if effect.side_effects:  # keep the intent's attempt count current (lazily)
                journal.write(effect.record(RecordState.STARTED, None, None), Commit.LAZY)
            self._bus.publish(run_id, "tool.retrying", {"seq": effect.seq, "name": effect.name,
                                                        "attempt": attempt, "error": error.message,
                                                        "retry_in_seconds": delay})

        assert request.kwargs is not None, "ValidateStage runs before the executor"
        # A call resumed after a crash goes on from the attempt the crash interrupted.
        first = effect.attempts + 1 if effect.resumed else 1
        effect.attempts = first
        if effect.resumed and effect.side_effects:
            journal.write(effect.record(RecordState.STARTED, None, None), Commit.LAZY)
        bus = self._bus

        def on_progress(progress: float, total: float | None, message: str | None) -> None:
            bus.publish(run_id, "tool.progress", {"seq": effect.seq, "name": effect.name,
                                                  "progress": progress, "total": total,
                                                  "message": message})

        return await invoke(request.tool, dict(request.kwargs), run_id=run_id, seq=effect.seq,
                            first_attempt=first, sleep=self._clock.sleep, on_retry=on_retry,
                            limiter=self._limiter_for(request.tool), sandbox=self._sandbox,
                            tenant=effect.scope.run.tenant,
                            on_progress=on_progress if request.tool.context_param else None)

    async def _llm(self, effect: Effect) -> JSONObject:
        call: ModelCall = effect.request
        run_id = effect.scope.run.run_id
        bus = self._bus

        on_delta = None
        if bus.active:  # built only when someone listens: most calls stream to nobody
            def on_delta(text: str) -> None:
                bus.publish(run_id, "llm.delta", {"seq": effect.seq, "text": text})

        def on_retry(attempt: int, error: str, delay: float) -> None:
            # On the record and on the bus, as tool retries are; text streamed by the failed
            # attempt is void (the next attempt streams the reply from its start).
            effect.detail.setdefault("failed_attempts", []).append(
                {"attempt": attempt, "error": error, "retry_in_seconds": round(delay, 3)})
            effect.attempts = attempt + 1
            bus.publish(run_id, "llm.retrying", {"seq": effect.seq, "name": effect.name,
                                                 "attempt": attempt, "error": error,
                                                 "retry_in_seconds": delay})

        try:
            reply = await call.model.complete(ModelRequest(
                call.messages, call.tools, run_id=run_id, call_index=call.call_index,
                on_delta=on_delta, on_retry=on_retry))
        except ModelError as exc:
            effect.attempts = max(effect.attempts, exc.attempts)
            raise
        except TetherError:
            raise
        except Exception as exc:
            raise ModelError(f"model {effect.name!r} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(reply, Reply):
            raise ModelError(f"model {effect.name!r} returned {type(reply).__name__}, not a Reply")
        value = reply.to_json()
        effect.detail["usage"] = value["usage"]
        return value

    async def _step(self, effect: Effect) -> Any:
        call: StepCall = effect.request
        try:
            if inspect.iscoroutinefunction(call.fn):
                return await call.fn(*call.args)
            result = await anyio.to_thread.run_sync(functools.partial(call.fn, *call.args))
            if inspect.isawaitable(result):
                return await result
            return result
        except TetherError:
            raise
        except Exception as exc:
            raise StepError(effect.name, f"{type(exc).__name__}: {exc}",
                            error_type=type(exc).__name__) from exc

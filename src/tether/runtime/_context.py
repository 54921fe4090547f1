"""``Context``: the only way an agent touches the world.

Every method that has an effect takes its journal seq *synchronously*, when it is called,
and returns a coroutine to await. So ``gather(ctx.tool(a), ctx.tool(b))`` numbers the two
calls in argument order on every run and every replay, whatever order they finish in.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Callable, Coroutine, Sequence
from random import Random
from typing import TYPE_CHECKING, Any

from tether import _json
from tether.errors import ChildRunFailed, UnknownTool, WaitTimeout, error_from_json
from tether.models import Model, ToolSpec
from tether.runtime._executors import ChildStart, ModelCall, StepCall, ToolRequest
from tether.runtime._pipeline import Effect, RunScope, Suspended
from tether.store import CHILD_SIGNAL_PREFIX, MISSING, Commit, Record, RecordState
from tether.tools import Tool
from tether.types import JSONObject, Reply, RunStatus

if TYPE_CHECKING:
    from tether.runtime._agent import Agent
    from tether.runtime._runtime import Runtime


class ChildRun:
    """A run started with ``ctx.start``; ``await child.result()`` waits for it durably."""

    def __init__(self, ctx: Context, run_id: str) -> None:
        self._ctx = ctx
        self.run_id = run_id

    def result(self) -> Coroutine[Any, Any, Any]:
        """The child's result; raises ``ChildRunFailed`` if it failed or was cancelled."""
        waiting = self._ctx.wait(CHILD_SIGNAL_PREFIX + self.run_id)

        async def outcome() -> Any:
            data = await waiting
            assert isinstance(data, dict)
            if data.get("status") != str(RunStatus.COMPLETED):
                error = data.get("error")
                raise ChildRunFailed(self.run_id, str(data.get("status")),
                                     error if isinstance(error, dict) else None)
            return data.get("result")
        return outcome()


class Context:
    """Passed to every agent function as its first argument.

    Attributes:
        run_id: the run's id.
        input: the run's input.
        thread_id: the conversation thread the run belongs to, if any.
        tenant: the tenant the run belongs to.
        principal: who the run acts for.
    """

    def __init__(self, runtime: Runtime, scope: RunScope, agent: Agent) -> None:
        self._runtime = runtime
        self._scope = scope
        self._journal = scope.journal
        self._agent = agent
        run = scope.run
        self.run_id = run.run_id
        self.input = run.input
        self.thread_id = run.thread_id
        self.tenant = run.tenant
        self.principal = run.principal
        self._rng: Random | None = None

    @property
    def agent(self) -> Agent:
        """The agent this run executes."""
        return self._agent

    @property
    def replaying(self) -> bool:
        """Whether the journal still holds records ahead of the code (for logging only)."""
        return self._journal.last_recorded_seq > self._journal._seq

    def _run(self, effect: Effect) -> Coroutine[Any, Any, Any]:
        # The pipeline's own coroutine, not a wrapper: one frame less on every effect.
        runtime = self._runtime
        pipelines = runtime._pipelines if runtime.events.active else runtime._quiet_pipelines
        return pipelines[effect.kind](effect)  # type: ignore[return-value]

    # -- tools and models ------------------------------------------------------------------

    # Tool, step and signal results are typed Any on purpose: they are JSON the caller knows
    # the shape of, and a JSON union would force a cast at every call site.
    def tool(self, tool: str | Tool, args: JSONObject | None = None,
             ) -> Coroutine[Any, Any, Any]:
        """Call a tool of this agent (by name or object) with JSON arguments.

        Raises (when awaited):
            ToolArgumentError: the arguments do not fit the tool's schema.
            ToolError: the tool failed (after its retries); ``ToolTimeout`` if it ran out of time.
            UnknownTool: the agent has no tool of that name.
        """
        resolved = self._resolve_tool(tool)
        if resolved is None:
            return _raise(UnknownTool(str(tool), f"unknown tool {tool!r}; this agent's tools: "
                                      + (", ".join(sorted(self._agent.tools)) or "none")))
        args = {} if args is None else args
        try:
            digest = _json.digest(args)
        except (TypeError, ValueError) as exc:
            return _raise(UnknownTool(resolved.name, f"arguments are not JSON: {exc}"))
        side_effects = resolved.side_effects
        effect = Effect(self._scope, self._journal.next_seq(), "tool", resolved.name, digest,
                        ToolRequest(resolved, args), side_effects=side_effects,
                        retry_uncertain=resolved.idempotent,
                        outcome_commit=Commit.SOON if side_effects else Commit.LAZY,
                        detail={"args": args})
        return self._run(effect)

    def _resolve_tool(self, tool: str | Tool) -> Tool | None:
        if isinstance(tool, Tool):
            return tool
        return self._agent.tools.get(tool)

    def llm(self, model: str | Model, messages: Sequence[JSONObject],
            tools: Sequence[str | Tool] | None = None) -> Coroutine[Any, Any, Reply]:
        """Call a model with OpenAI-style messages and, optionally, tools it may call.

        Args:
            model: a model object, or the name of one given to the ``Runtime``.
            messages: ``{"role": ..., "content": ...}`` dicts.
            tools: tools (objects or names of this agent's tools) offered to the model.
        """
        resolved = self._runtime._model(model)
        specs: list[ToolSpec] = []
        for item in tools or ():
            found = self._resolve_tool(item)
            if found is None:
                raise UnknownTool(str(item), f"unknown tool {item!r} offered to the model")
            specs.append(found.spec)
        messages = list(messages)
        # The digest covers what identifies the call (model, tools, the first message, which
        # is usually the system prompt, the last one and how many) without hashing the whole
        # conversation on every step, which would make each step O(history).
        digest = _json.digest([resolved.name, len(messages), messages[0] if messages else None,
                               messages[-1] if messages else None, [spec.name for spec in specs]])
        call_index = self._scope.llm_calls
        self._scope.llm_calls += 1
        effect = Effect(self._scope, self._journal.next_seq(), "llm", resolved.name, digest,
                        ModelCall(resolved, messages, specs, call_index), convert=Reply.from_json)
        return self._run(effect)

    def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Coroutine[Any, Any, Any]:
        """Run non-deterministic code once; its (JSON) result is durable before you go on.

        Sync functions run in a thread. On replay the recorded result is returned and ``fn``
        is not called.
        """
        effect = Effect(self._scope, self._journal.next_seq(), "step", name, _json.digest(name),
                        StepCall(fn, args), outcome_commit=Commit.WAIT)
        return self._run(effect)

    # -- durable time and signals ----------------------------------------------------------

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """Sleep durably: a long sleep unloads the run, which is replayed when it is due."""
        seq = self._journal.next_seq()
        return self._sleep(seq, float(seconds))

    async def _sleep(self, seq: int, seconds: float) -> None:
        clock = self._runtime.clock
        record = self._journal.lookup(seq, "sleep", "sleep", _json.digest(seconds))
        if record is not None and record.state == RecordState.OK:
            return
        if record is None:
            wake_at_ms = clock.now_ms() + int(seconds * 1000)
            record = Record(seq, "sleep", "sleep", _json.digest(seconds), RecordState.STARTED,
                            _json.encode({"wake_at_ms": wake_at_ms}), 1, clock.now_ms())
            self._journal.write(record, Commit.LAZY)
        else:
            wake_at_ms = _json.decode(record.value or "{}")["wake_at_ms"]
        remaining = (wake_at_ms - clock.now_ms()) / 1000
        if remaining > self._runtime.settings.memory_sleep_seconds:
            await self._runtime._suspend(self._scope, wake_at_ms=wake_at_ms, waiting_for=None)
            raise Suspended
        if remaining > 0:
            await clock.sleep(remaining)
        # A new record, not the one written above: a store may still hold that one queued.
        self._journal.write(dataclasses.replace(record, state=RecordState.OK,
                                                finished_at_ms=clock.now_ms()), Commit.LAZY)

    def wait(self, signal: str, timeout: float | None = None) -> Coroutine[Any, Any, Any]:
        """Wait durably for a signal (``Runtime.signal`` / ``tether signal``); returns its data.

        The run is unloaded while it waits. Raises ``WaitTimeout`` after ``timeout`` seconds.
        """
        seq = self._journal.next_seq()
        return self._wait(seq, signal, timeout)

    async def _wait(self, seq: int, signal: str, timeout_seconds: float | None) -> Any:
        clock = self._runtime.clock
        digest = _json.digest([signal, timeout_seconds])
        record = self._journal.lookup(seq, "wait", signal, digest)
        if record is not None and record.state == RecordState.OK:
            return _json.decode(record.value or "null")
        if record is not None and record.state == RecordState.ERROR:
            raise error_from_json(_json.decode(record.value or "{}"))
        if record is None:
            deadline = (None if timeout_seconds is None
                        else clock.now_ms() + int(timeout_seconds * 1000))
            record = Record(seq, "wait", signal, digest, RecordState.STARTED, None, 1,
                            clock.now_ms(), None, _json.encode({"deadline_ms": deadline}))
        else:
            deadline = _json.decode(record.detail or "{}").get("deadline_ms")
        while True:
            data = await self._runtime.store.take_signal(self.run_id, self._journal.fence, signal,
                                                        record)
            if data is not MISSING:
                self._runtime.events.publish(self.run_id, "signal.received", {"name": signal})
                return _json.decode(data)  # type: ignore[arg-type]
            if deadline is not None and clock.now_ms() >= deadline:
                error = WaitTimeout(signal, timeout_seconds or 0)
                self._journal.write(dataclasses.replace(
                    record, state=RecordState.ERROR, value=_json.encode(error.to_json()),
                    finished_at_ms=clock.now_ms()), Commit.LAZY)
                raise error
            self._journal.write(record, Commit.LAZY)
            if await self._runtime._suspend(self._scope, wake_at_ms=deadline,
                                            waiting_for=signal):
                raise Suspended

    def now(self) -> datetime.datetime:
        """The current UTC time, recorded: a replay sees the time the first execution saw."""
        seq = self._journal.next_seq()
        record = self._journal.lookup(seq, "now", "now", "")
        if record is not None:
            millis = int(record.value or 0)
        else:
            millis = self._runtime.clock.now_ms()
            self._journal.write(Record(seq, "now", "now", "", RecordState.OK, str(millis), 1,
                                       millis, millis), Commit.LAZY)
        return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)

    def uuid(self) -> uuid.UUID:
        """A random UUID (version 4) that is the same on replay. Not for secrets."""
        return uuid.UUID(int=self._seeded().getrandbits(128), version=4)

    def random(self) -> float:
        """A float in [0, 1) that is the same on replay. Not for secrets."""
        return self._seeded().random()

    def _seeded(self) -> Random:
        # Seeded by the run id: the same numbers on every replay, different ones per run.
        # Made on first use: seeding costs more than a whole journaled step.
        if self._rng is None:
            self._rng = Random(self.run_id)  # noqa: S311 - determinism, not secrecy
        return self._rng

    # -- child runs and threads ------------------------------------------------------------

    def start(self, agent: Agent | str, input: JSONObject | None = None,
              ) -> Coroutine[Any, Any, ChildRun]:
        """Start a child run (durably, exactly once); ``await child.result()`` to join it."""
        resolved = self._runtime._agent(agent)
        data = resolved.validate_input(input or {})
        seq = self._journal.next_seq()
        child_id = f"{self.run_id}.{seq}"
        effect = Effect(self._scope, seq, "start", resolved.name, _json.digest([resolved.name, data]),
                        ChildStart(resolved, data, child_id), detail={"child_run_id": child_id})

        async def started() -> ChildRun:
            result = await self._run(effect)
            return ChildRun(self, result["run_id"])
        return started()

    def thread_messages(self) -> Coroutine[Any, Any, list[JSONObject]]:
        """The messages earlier completed runs on this run's thread left (empty without one)."""
        seq = self._journal.next_seq()

        async def load() -> list[JSONObject]:
            record = self._journal.lookup(seq, "thread_read", self.thread_id or "", "")
            if record is not None:
                return _json.decode(record.value or "[]")  # type: ignore[no-any-return]
            messages = ([] if self.thread_id is None
                        else await self._runtime.store.load_thread(self.thread_id))
            now = self._runtime.clock.now_ms()
            self._journal.write(Record(seq, "thread_read", self.thread_id or "", "",
                                       RecordState.OK, _json.encode(messages), 1, now, now),
                                Commit.LAZY)
            return messages
        return load()

    def add_thread_messages(self, messages: Sequence[JSONObject]) -> None:
        """Append messages to this run's thread; they count once the run completes."""
        seq = self._journal.next_seq()
        if self._journal.lookup(seq, "thread", self.thread_id or "", "") is not None:
            return
        now = self._runtime.clock.now_ms()
        self._journal.write(Record(seq, "thread", self.thread_id or "", "", RecordState.OK,
                                   _json.encode(list(messages)), 1, now, now), Commit.LAZY)


async def _raise(error: BaseException) -> Any:
    raise error


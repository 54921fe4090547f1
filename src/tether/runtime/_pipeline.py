"""The effect pipeline: every model call, tool call, step and child run passes these stages.

A stage is a small object with one job, called with the effect and the rest of the pipeline
(ASGI middleware, for effects)::

    JournalStage  replay a recorded outcome, or record the outcome of what follows
    ValidateStage check tool arguments against the schema (before anything may act)
      ... governance stages (policy, residency, limits, approvals) go here ...
    IntentStage   make a side effect's intent durable before it runs
    EventStage    tell subscribers the effect started and how it ended
    executor      act: call the tool, the model, the step function, start the child

A stage refuses by raising a ``TetherError``; ``JournalStage`` records it as the effect's
outcome, so a replay sees the same refusal even if policies changed in between.

A stage names the effect kinds it acts on (``kinds``; None for all), and each kind gets its own
chain of just those stages ending in its executor: a model call does not pass through tool
validation. Every stage is a coroutine frame that each wake-up of the effect climbs through,
so a short chain is measurably cheaper with thousands of runs in flight.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tether import _json
from tether._clock import Clock
from tether.errors import StepError, StoreError, TetherError, ToolError, error_from_json
from tether.journal import RunJournal
from tether.runtime._events import EventBus
from tether.store import Commit, NewRun, Record, RecordState, Store
from tether.types import JSONObject, Run


class Suspended(BaseException):
    """Unwinds a run that has parked itself durably (timer or signal); it holds no memory."""


class Abandoned(BaseException):
    """Unwinds a run between two effects when its runtime drains for shutdown; the run stays
    claimable and resumes elsewhere by replay."""


class StopFlag:
    """Shared by a runtime and its runs: set when the runtime drains."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False


class NeedsAttention(BaseException):
    """Unwinds a run that cannot go on without a person (see ``tether resolve``)."""

    def __init__(self, error: JSONObject) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


@dataclass(slots=True, eq=False)
class RunScope:
    """One execution of one run: its row, its journal, and what went wrong on the way."""

    run: Run
    journal: RunJournal
    stop: StopFlag = field(default_factory=StopFlag)
    llm_calls: int = 0  # model calls so far, replayed ones included (ModelRequest.call_index)
    park: Callable[..., Awaitable[bool]] | None = None
    """Parks the run durably, ``park(wake_at_ms=..., waiting_for=...)`` (False when the awaited
    signal is already there), for a stage that waits on something outside the run (an
    approval); the stage then raises ``Suspended``. Set by the runtime."""
    stage_state: dict[str, Any] | None = None
    """What stages keep about this execution of the run, each under its own key."""


@dataclass(slots=True, eq=False)
class Effect:
    """One effect in flight. ``request`` is kind-specific (set by the Context)."""

    scope: RunScope
    seq: int
    kind: str
    name: str
    digest: str
    request: Any
    side_effects: bool = False
    """The intent is made durable before the executor acts."""
    retry_uncertain: bool = False
    """After a crash between intent and outcome, act again (idempotent) instead of asking."""
    outcome_commit: Commit = Commit.LAZY
    detail: JSONObject = field(default_factory=dict)
    attempts: int = 0
    intent_recorded: bool = False
    resumed: bool = False
    """An intent from an earlier execution was found; the effect acts again (idempotent)."""
    started_at_ms: int = 0
    convert: Callable[[Any], Any] | None = None
    """Turns the JSON outcome into what the agent gets (a ``Reply`` for model calls)."""

    def record(self, state: str, value: str | None, finished_at_ms: int | None) -> Record:
        return Record(self.seq, self.kind, self.name, self.digest, state, value,
                      max(self.attempts, 1), self.started_at_ms, finished_at_ms,
                      _json.encode(self.detail) if self.detail else None)


Handler = Callable[[Effect], Awaitable[Any]]


class Stage(Protocol):
    @property
    def kinds(self) -> frozenset[str] | None:
        """The effect kinds this stage acts on; None for every kind."""

    async def __call__(self, effect: Effect, call_next: Handler) -> Any: ...


@runtime_checkable
class Admission(Protocol):
    """A stage that also decides whether a run may be created (``Runtime.start``); it refuses
    by raising a ``TetherError``, and no run is created."""

    async def admit(self, run: NewRun, store: Store) -> None: ...


@runtime_checkable
class Closing(Protocol):
    """A stage with work to finish when its runtime closes, after every run here stopped and
    before the store closes (governance signs the last checkpoint of its audit chains)."""

    async def close(self, store: Store) -> None: ...


def build_pipeline(stages: Sequence[Stage], executors: Mapping[str, Handler],
                   ) -> dict[str, Handler]:
    """For each effect kind, chain the stages that act on it, first to last, in front of the
    kind's executor."""
    pipelines: dict[str, Handler] = {}
    for kind, executor in executors.items():
        handler = executor
        for stage in reversed(stages):
            if stage.kinds is None or kind in stage.kinds:
                # A partial, not a wrapper coroutine: one frame less per stage.
                handler = functools.partial(stage.__call__, call_next=handler)
        pipelines[kind] = handler
    return pipelines


def effect_error(effect: Effect, message: str, error_type: str) -> TetherError:
    """An error of the effect's kind, for failures the runtime finds rather than the code."""
    if effect.kind == "tool":
        return ToolError(effect.name, message, error_type=error_type, attempts=effect.attempts)
    if effect.kind == "step":
        return StepError(effect.name, message, error_type=error_type)
    return TetherError(message)


class JournalStage:
    """Answer from the journal when the effect is recorded; otherwise record its outcome."""

    kinds: frozenset[str] | None = None

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        journal = effect.scope.journal
        record = (None if effect.seq > journal.last_recorded_seq  # past the replay: no lookup
                  else journal.lookup(effect.seq, effect.kind, effect.name, effect.digest))
        if record is not None:
            if record.state == RecordState.OK:
                journal.replayed += 1
                value = _json.decode(record.value or "null")
                return value if effect.convert is None else effect.convert(value)
            if record.state == RecordState.ERROR:
                journal.replayed += 1
                raise error_from_json(_json.decode(record.value or "{}"))
            # An intent without an outcome: the world may or may not have seen this call.
            resolution = _json.decode(record.detail).get("resolution") if record.detail else None
            if not (effect.retry_uncertain or resolution == "retry"):
                raise NeedsAttention({
                    "code": "journal.uncertain", "seq": effect.seq, "kind": effect.kind,
                    "name": effect.name,
                    "message": f"{effect.kind} {effect.name!r} (seq {effect.seq}) was started "
                               "but its outcome was never recorded, and it is not idempotent; "
                               "`tether resolve RUN_ID --retry | --skip-with JSON | --fail`"})
            effect.attempts, effect.intent_recorded, effect.resumed = record.attempts, True, True
            effect.started_at_ms = record.started_at_ms
            if resolution is not None:  # keep the operator's decision on the record
                effect.detail["resolution"] = resolution
        if effect.scope.stop.requested:
            raise Abandoned  # draining: act no more; a replay elsewhere goes on from here
        journal.executed += 1
        if not effect.started_at_ms:
            effect.started_at_ms = self._clock.now_ms()
        try:
            value = await call_next(effect)
            try:
                text = _json.encode(value)
            except (TypeError, ValueError) as exc:
                raise effect_error(effect, f"{effect.kind} {effect.name!r} returned a value "
                                           f"that is not JSON: {exc}", "TypeError") from None
        except StoreError:
            raise  # the journal itself failed: nothing can be recorded
        except TetherError as exc:
            pending = self._record(effect, RecordState.ERROR, _json.encode(exc.to_json()))
            if pending is not None:
                await pending
            raise
        pending = self._record(effect, RecordState.OK, text)
        if pending is not None:
            await pending
        # What a replay will return: the recorded text read back (tuples become lists...).
        value = _json.decode(text)
        return value if effect.convert is None else effect.convert(value)

    def _record(self, effect: Effect, state: str, value: str) -> Awaitable[None] | None:
        # Not a coroutine: most outcomes are committed lazily and need no await at all.
        journal = effect.scope.journal
        commit = effect.outcome_commit
        if commit is Commit.LAZY:
            commit = journal.lazy_commit()
        return journal.write(effect.record(state, value, self._clock.now_ms()), commit)


class ValidateStage:
    """Tool arguments must fit the schema before any later stage (or the tool) sees them."""

    kinds: frozenset[str] | None = frozenset({"tool"})

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        effect.request.kwargs = effect.request.tool.validate(effect.request.args)
        return await call_next(effect)


class IntentStage:
    """Make a side effect's intent durable (with every earlier record) before it acts."""

    kinds: frozenset[str] | None = frozenset({"tool"})

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        if effect.side_effects and not effect.intent_recorded:
            effect.attempts = 1
            pending = effect.scope.journal.write(effect.record(RecordState.STARTED, None, None),
                                                 Commit.WAIT)
            if pending is not None:
                await pending
            effect.intent_recorded = True
        return await call_next(effect)


class EventStage:
    """Publish ``<kind>.started`` and ``<kind>.finished`` / ``<kind>.failed``."""

    kinds: frozenset[str] | None = None

    def __init__(self, bus: EventBus, clock: Clock) -> None:
        self._bus = bus
        self._clock = clock

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        run_id = effect.scope.run.run_id
        base: JSONObject = {"seq": effect.seq, "name": effect.name}
        if self._bus.active:
            started = {**base, "args": effect.request.args} if effect.kind == "tool" else base
            self._bus.publish(run_id, f"{effect.kind}.started", started)
        try:
            value = await call_next(effect)
        except TetherError as exc:
            self._bus.publish(run_id, f"{effect.kind}.failed", {**base, "error": exc.to_json()})
            raise
        if self._bus.active:
            data: JSONObject = {**base, "duration_ms": self._clock.now_ms() - effect.started_at_ms,
                                "attempts": max(effect.attempts, 1)}
            if "usage" in effect.detail:
                data["usage"] = effect.detail["usage"]
            if effect.kind == "llm":
                data["text"] = value.get("text")
                data["tool_calls"] = value.get("tool_calls")
            self._bus.publish(run_id, f"{effect.kind}.finished", data)
        return value


def core_stages(bus: EventBus, clock: Clock) -> list[Stage]:
    """The stages of the core runtime, in pipeline order."""
    return [JournalStage(clock), ValidateStage(), IntentStage(clock), EventStage(bus, clock)]


"""``Runtime``: the composition root. It picks the store, builds the pipeline, claims runs and
drives them, and parks and wakes them.

Lifecycle of a run in one process::

    start/claim --> execute (replay + live effects) --> completed | failed | needs_attention
                        |                       ^
                        +-> suspend (waiting) --+  woken by its timer, a signal or resolve

A run is executed by one task while it makes progress. A suspended run has no task and no
memory here: only a row in the store (and, for a timer, a number in a heap).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import heapq
import logging
import sys
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from tether import _json
from tether._clock import Clock, SystemClock
from tether.config import Settings, load_settings
from tether.errors import (
    AgentNotFound,
    RunConflict,
    RunFailed,
    RunNotFound,
    StoreError,
    TetherError,
    UsageError,
)
from tether.journal import RunJournal
from tether.models import Model, ModelConfig, ModelRegistry, load_model_configs
from tether.runtime._agent import Agent, load_agent
from tether.runtime._context import Context
from tether.runtime._events import EventBus
from tether.runtime._executors import ChildStart, Executor
from tether.runtime._owner import new_owner_id, owner_is_dead
from tether.runtime._pipeline import (
    Abandoned,
    Admission,
    Closing,
    Effect,
    EventStage,
    Handler,
    NeedsAttention,
    RunScope,
    Stage,
    StopFlag,
    Suspended,
    build_pipeline,
    core_stages,
)
from tether.runtime._telemetry import TelemetryStage
from tether.sandbox import Sandbox, load_sandbox_config
from tether.store import Claim, NewRun, Record, Store, open_store
from tether.telemetry import Telemetry
from tether.tools import Tool
from tether.types import JSON, JSONObject, Run, RunStatus

logger = logging.getLogger("tether.runtime")


def new_run_id() -> str:
    return uuid.uuid4().hex


def failure_json(exc: BaseException) -> JSONObject:
    """How a run's failure is recorded: code, type, message and the traceback's tail."""
    data = exc.to_json() if isinstance(exc, TetherError) else {
        "code": "agent.error", "type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
    data["traceback"] = "".join(traceback.format_exception(exc))[-4000:]
    return data


class _Watch:
    """Wakes callers waiting on one run; carries the run's new state when this process knows it.

    Plain asyncio (not anyio) here and in ``_wait_for``: every run has a waiter, and anyio
    looks the event-loop backend up on each call, which showed up at 10% of CPU in B2.
    """

    __slots__ = ("_event", "notified", "run")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None  # made only when someone waits
        self.notified = False
        self.run: Run | None = None

    def notify(self, run: Run | None) -> None:
        """Wake the waiters; ``run`` is the run's new state, or None when they must read it."""
        self.run, self.notified = run, True
        if self._event is not None:
            self._event.set()

    async def wait(self, timeout_seconds: float | None) -> None:
        """Until notified, or for at most ``timeout_seconds`` (None: until notified)."""
        if self.notified:
            return
        if self._event is None:
            self._event = asyncio.Event()
        if timeout_seconds is None:
            await self._event.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await self._event.wait()


class RunHandle:
    """A started run. ``await handle.result()`` waits for it to end."""

    def __init__(self, runtime: Runtime, run_id: str, run: Run | None = None,
                 watch: _Watch | None = None) -> None:
        self._runtime = runtime
        self.run_id = run_id
        # The run as created, and a watch registered at the same moment: the first wait needs
        # no store read and cannot miss a change made in between. Both are used once.
        self._known = run
        self._watch = watch

    async def status(self) -> Run:
        """The run as the store holds it now."""
        return await self._runtime.get(self.run_id)

    async def settled(self) -> Run:
        """Wait until the run is no longer pending or running (it may be waiting)."""
        return await self._wait(lambda run: run.status.is_settled)

    async def result(self) -> JSON:
        """Wait until the run ends; its result, or ``RunFailed`` (also for needs_attention)."""
        run = await self._wait(
            lambda run: run.status.is_terminal or run.status is RunStatus.NEEDS_ATTENTION)
        if run.status is not RunStatus.COMPLETED:
            raise RunFailed(run.run_id, str(run.status), run.error)
        return run.result

    async def _wait(self, done: Callable[[Run], bool]) -> Run:
        known, watch, self._known, self._watch = self._known, self._watch, None, None
        return await self._runtime._wait_for(self.run_id, done, known, watch)


class Runtime:
    """Runs agents durably. Use as an async context manager.

    Args:
        db: where runs live (``sqlite:///path``, ``memory://``); overrides ``settings.db``.
        settings: runtime settings (default: ``tether.toml`` and ``TETHER_*`` variables).
        agents: agents to register up front (others register when first started).
        models: models ``ctx.llm`` may name, as a list (by their ``name``) or a mapping of
            names to model objects or ``ModelConfig``s. Without ``settings``, the
            ``[models.NAME]`` tables of ``./tether.toml`` are read too (these win). A name that
            is neither may be ``provider:model`` (``openai:gpt-4o-mini``).
        clock: time source (a fake one in tests).
        worker: also claim and run runs this runtime did not start (left by dead processes,
            due timers, delivered signals). With False, only runs started here are driven.
        stages: extra pipeline stages, placed after validation and before the intent.
        store: a store object to use instead of the one ``db`` names.
        sandbox: where tools declared with ``sandbox=PROFILE`` run (default: one with the
            ``[sandbox]`` profiles of ``./tether.toml``); its warm pools live while the
            runtime is open.
        telemetry: OpenTelemetry spans for runs, model and tool calls (``tether.telemetry``).
            Without ``settings``, the ``[telemetry]`` table of ``./tether.toml`` is read when
            this is not given; without either, no span is made.
    """

    def __init__(self, db: str | None = None, *, settings: Settings | None = None,
                 agents: Sequence[Agent] = (), models: Sequence[Model] | Mapping[str, Model | ModelConfig] = (),
                 clock: Clock | None = None, worker: bool = True, stages: Sequence[Stage] = (),
                 store: Store | None = None, sandbox: Sandbox | None = None,
                 telemetry: Telemetry | None = None) -> None:
        configured = load_model_configs() if settings is None else {}
        self.telemetry = telemetry if telemetry is not None or settings is not None \
            else Telemetry.load()
        self.sandbox = sandbox or Sandbox(load_sandbox_config())
        settings = settings or load_settings()
        self.settings = settings.replace(db=db) if db is not None else settings
        self.clock: Clock = clock or SystemClock()
        self.store: Store = store or open_store(self.settings)
        self.events = EventBus(self.clock)
        self.owner = new_owner_id()
        self._worker = worker
        self._agents: dict[tuple[str, str], Agent] = {}
        self._agents_by_name: dict[str, Agent] = {}
        for item in agents:
            self._register(item)
        self._models = ModelRegistry(configured)
        for name, model in (models.items() if isinstance(models, Mapping)
                            else ((model.name, model) for model in models)):
            self._models.add(name, model)
        stage_list = core_stages(self.events, self.clock)
        stage_list[2:2] = list(stages)  # after JournalStage and ValidateStage
        if self.telemetry is not None:  # right after the journal: replays make no span
            stage_list.insert(1, TelemetryStage(self.telemetry))
        self._admissions = [stage for stage in stages if isinstance(stage, Admission)]
        self._closings = [stage for stage in stages if isinstance(stage, Closing)]
        executors = Executor(clock=self.clock, bus=self.events, limiter_for=self._limiter,
                             start_child=self._start_child, sandbox=self.sandbox).by_kind()
        self._pipelines: dict[str, Handler] = build_pipeline(stage_list, executors)
        # The same without the event stage, for when nobody listens (the common case):
        # one coroutine frame less for every effect to climb through.
        self._quiet_pipelines: dict[str, Handler] = build_pipeline(
            [stage for stage in stage_list if not isinstance(stage, EventStage)], executors)
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        # One asyncio task per run executing here. Not an anyio task group: spawning through
        # anyio cost 46 µs per run (B2 at 10,000 runs spent 0.46 s in it). The structured
        # guarantee is kept by hand: __aexit__ cancels and awaits every one of these tasks.
        self._active: dict[str, asyncio.Task[None]] = {}
        self._own: set[str] = set()  # runs started here (what a non-worker runtime drives)
        self._watches: dict[str, _Watch] = {}
        self._timers: list[int] = []  # wake times of runs this process parked
        self._wakeup = anyio.Event()
        self._backlog = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self._open = False
        self._gc_restore: tuple[int, int, int] | None = None
        self._switch_restore: float | None = None
        self._stop = StopFlag()
        self._drained: anyio.Event | None = None  # set once draining and nothing is active

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self.store.watch(self._woken_by_store)
        await self.store.open()
        self._tune_interpreter()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._open = True
        self._task_group.start_soon(self._dispatch_loop)
        self._task_group.start_soon(self._heartbeat_loop)
        self.sandbox.start_pools_in(self._task_group)  # warm pools, filled on first use
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # Stop claiming; cancel what is executing (its journal stays consistent: an effect
        # without an outcome is replayed or flagged on resume).
        self._open = False
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        runs = list(self._active.values())
        for task in runs:
            task.cancel()
        try:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*runs, return_exceptions=True)
            # Not handed the body's exception: the task group would wrap it in an
            # ExceptionGroup, and callers should see the error they raised (or we raised).
            await self._task_group.__aexit__(None, None, None)
        finally:
            # Hand our runs back at once so the next worker need not wait for our lease.
            with anyio.CancelScope(shield=True):
                try:
                    await self._close_stages()
                    await self.store.release(owner=self.owner)
                finally:
                    await self.store.aclose()
                    self._restore_interpreter()
                    await self._models.aclose()  # the model clients' connections
                    await self.sandbox.aclose()  # idle warm workers
                    if self.telemetry is not None:  # export the spans still buffered
                        await anyio.to_thread.run_sync(self.telemetry.shutdown)

    async def _close_stages(self) -> None:
        """Let stages finish their work while the store is still open (governance signs a
        last checkpoint of the audit chains this process extended)."""
        for stage in self._closings:
            try:
                await stage.close(self.store)
            except (TetherError, OSError) as exc:
                logger.warning("closing %s: %s", type(stage).__name__, exc)

    async def drain(self, grace_seconds: float) -> None:
        """Stop taking runs, let every effect in flight finish, and stop each run before its
        next effect, waiting at most ``grace_seconds``; then leave the context to release them.

        A run stopped this way is still ``running`` in the store and is resumed by replay by
        the next worker, at once (its owner is gone). What the grace protects: a tool call
        interrupted half-way is uncertain after a restart, and a non-idempotent one then
        needs a person.
        """
        self._stop.requested = True
        self._drained = anyio.Event()
        if self._active:
            with anyio.move_on_after(grace_seconds):
                await self._drained.wait()

    def _tune_interpreter(self) -> None:
        """Tune the interpreter for many runs and a writer thread while this runtime is open
        (``Settings.gc_threshold``, ``Settings.switch_interval_ms``)."""
        interval = self.settings.switch_interval_ms / 1000
        if interval and interval < sys.getswitchinterval():
            self._switch_restore = sys.getswitchinterval()
            sys.setswitchinterval(interval)
        current = gc.get_threshold()
        wanted = self.settings.gc_threshold
        if wanted and wanted > current[0]:
            self._gc_restore = current
            # Most objects that survive a young collection are the state of runs in flight,
            # which lives as long as the run; scanning them again in generation 1 every ten
            # young collections cost more than everything else the collector did in B2.
            gc.set_threshold(wanted, max(current[1], 100), current[2])

    def _restore_interpreter(self) -> None:
        # Only undo our own changes: another runtime in this process may have made its own.
        if self._gc_restore is not None and gc.get_threshold()[0] == self.settings.gc_threshold:
            gc.set_threshold(*self._gc_restore)
        if (self._switch_restore is not None
                and sys.getswitchinterval() == self.settings.switch_interval_ms / 1000):
            sys.setswitchinterval(self._switch_restore)
        self._gc_restore = self._switch_restore = None

    # -- registry --------------------------------------------------------------------------

    def _register(self, agent: Agent) -> Agent:
        known = self._agents.setdefault((agent.name, agent.version), agent)
        self._agents_by_name[agent.name] = agent
        return known

    def _agent(self, agent: Agent | str) -> Agent:
        if isinstance(agent, Agent):
            return self._register(agent)
        if agent in self._agents_by_name:
            return self._agents_by_name[agent]
        if ":" in agent:
            return self._register(load_agent(agent))
        raise AgentNotFound(f"no agent named {agent!r} is registered; pass the agent object or "
                            "MODULE:AGENT")

    def _model(self, model: str | Model) -> Model:
        return self._models.resolve(model)

    def _limiter(self, tool: Tool) -> anyio.CapacityLimiter | None:
        if tool.max_concurrency is None:
            return None
        limiter = self._limiters.get(tool.name)
        if limiter is None:
            limiter = self._limiters[tool.name] = anyio.CapacityLimiter(tool.max_concurrency)
        return limiter

    def _agent_for_run(self, run: Run) -> Agent:
        """The agent a run is pinned to (name and version), importing it if need be."""
        agent = self._agents.get((run.agent, run.agent_version))
        if agent is not None:
            return agent
        try:
            loaded = load_agent(run.agent_ref)
        except AgentNotFound as exc:
            raise AgentNotFound(
                f"run {run.run_id} needs agent {run.agent} version {run.agent_version}, which "
                f"this worker cannot load ({exc.message}). Run it where that version is "
                f"registered, or settle the run: `tether resolve {run.run_id} --fail`") from None
        if loaded.name == run.agent and loaded.version == run.agent_version:
            return self._register(loaded)
        raise AgentNotFound(
            f"run {run.run_id} is pinned to agent {run.agent} version {run.agent_version}; "
            f"{run.agent_ref} is now version {loaded.version}. Deploy the version the run "
            f"started on, or settle the run: `tether resolve {run.run_id} --fail`")

    # -- starting and controlling runs -----------------------------------------------------

    async def start(self, agent: Agent | str, input: JSONObject | None = None, *,
                    run_id: str | None = None, thread_id: str | None = None,
                    tenant: str | None = None, principal: str | None = None) -> RunHandle:
        """Create a run (durably) and start executing it.

        Starting again with the same ``run_id`` returns the existing run, as long as the agent
        and input are the same (``RunConflict`` otherwise).
        """
        resolved = self._agent(agent)
        data = resolved.validate_input(input or {})
        new = NewRun(
            run_id=run_id or new_run_id(), agent=resolved.name, agent_version=resolved.version,
            agent_ref=resolved.ref, input=_json.encode(data),
            tenant=tenant or self.settings.tenant, principal=principal or self.settings.principal,
            thread_id=thread_id)
        for admission in self._admissions:  # e.g. governance: may this principal start it?
            await admission.admit(new, self.store)
        run = await self._create(new, data)
        return RunHandle(self, run.run_id, run, self._watch(run.run_id))

    async def run(self, agent: Agent | str, input: JSONObject | None = None, *,
                  run_id: str | None = None, thread_id: str | None = None,
                  tenant: str | None = None, principal: str | None = None) -> JSON:
        """Start a run and wait for its result (``RunFailed`` if it does not complete)."""
        handle = await self.start(agent, input, run_id=run_id, thread_id=thread_id,
                                  tenant=tenant, principal=principal)
        return await handle.result()

    async def _create(self, new: NewRun, data: JSONObject) -> Run:
        if not self._open or self._stop.requested:
            raise UsageError("the runtime is not open (or is draining); "
                             "use `async with Runtime(...) as rt:`")
        claim_now = len(self._active) < self.settings.max_concurrent_runs
        created = await self.store.create_run(
            new, now_ms=self.clock.now_ms(), owner=self.owner if claim_now else None,
            lease_ms=self._lease_ms)
        run = created.run
        if created.claim is None:
            if run.agent != new.agent or run.input != data:
                raise RunConflict(run.run_id, f"agent {run.agent!r} and input "
                                              f"{_json.encode(run.input)}")
            if not run.status.is_terminal:
                self._own.add(run.run_id)
                self._wake()
            return run
        self._own.add(run.run_id)
        self._launch(created.claim, fresh=True)
        return run

    async def _start_child(self, effect: Effect, request: ChildStart) -> str:
        parent = effect.scope.run
        await self._create(NewRun(
            run_id=request.run_id, agent=request.agent.name, agent_version=request.agent.version,
            agent_ref=request.agent.ref, input=_json.encode(request.input),
            tenant=parent.tenant, principal=parent.principal, parent_run_id=parent.run_id),
            request.input)
        return request.run_id

    async def signal(self, run_id: str, name: str, data: JSON = None) -> Run:
        """Deliver a signal to a run (durably); a run waiting for it is resumed."""
        run = await self.store.send_signal(run_id, name, _json.encode(data),
                                           now_ms=self.clock.now_ms())
        self.events.publish(run_id, "signal.sent", {"name": name})
        if run.status is RunStatus.PENDING:
            self._own.add(run_id)
            self._wake()
        return run

    async def cancel(self, run_id: str, *, reason: str = "cancelled", by: str | None = None,
                     ) -> Run:
        """Cancel a run that has not ended; an in-flight effect here is interrupted."""
        run = await self.store.cancel_run(
            run_id, reason={"code": "run.cancelled", "message": reason,
                            "by": by or self.settings.principal},
            now_ms=self.clock.now_ms())
        if run.status is not RunStatus.CANCELLED:
            return run  # it had ended already: cancelling changes nothing
        task = self._active.get(run_id)
        if task is not None:
            task.cancel()
        self.events.publish(run_id, "run.cancelled", {"reason": reason})
        await self._release_workspace(run)
        self._notify(run_id, run)
        return run

    async def resolve(self, run_id: str, action: str, value: JSON = None) -> Run:
        """Settle a run in needs_attention: ``retry``, ``skip`` (with ``value``) or ``fail``."""
        run = await self.store.resolve_run(
            run_id, action=action, value=None if action != "skip" else _json.encode(value),
            now_ms=self.clock.now_ms())
        self._notify(run_id, run)
        if run.status is RunStatus.PENDING:
            self._own.add(run_id)
            self._wake()
        return run

    async def resume(self, run_id: str) -> RunHandle:
        """Drive this run here when it can go on (a worker-less runtime drives only its own)."""
        run = await self.get(run_id)
        if not run.status.is_terminal:
            self._own.add(run_id)
            self._wake()
        return RunHandle(self, run_id)

    def handle(self, run_id: str) -> RunHandle:
        """A handle to wait on a run started anywhere."""
        return RunHandle(self, run_id)

    @property
    def active_runs(self) -> int:
        """Runs executing in this process now."""
        return len(self._active)

    async def until_idle(self, *, check_interval: float = 0.05) -> None:
        """Wait until nothing runs here and the store holds nothing runnable now
        (what ``tether worker --once`` waits for; runs parked for the future do not count)."""
        while True:
            await anyio.sleep(check_interval)
            if self._active:
                continue
            if await self.store.count_runnable(now_ms=self.clock.now_ms()) == 0 and not self._active:
                return
            self._wake()

    async def get(self, run_id: str) -> Run:
        """The run; raises ``RunNotFound`` for an unknown id."""
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def journal(self, run_id: str) -> list[Record]:
        """Every committed journal record of a run."""
        await self.get(run_id)
        return await self.store.load_journal(run_id)

    async def _wait_for(self, run_id: str, done: Callable[[Run], bool], known: Run | None,
                        watch: _Watch | None = None) -> Run:
        """Wait until ``done(run)``. ``known`` may be trusted only with the ``watch`` that was
        registered when it was read; without them the store is read first."""
        run = known if watch is not None else None
        while True:
            if watch is None:
                watch = self._watch(run_id)
            if run is None:
                run = await self.get(run_id)
            if done(run):
                return run
            # A run driven here wakes its waiters itself (its task wakes any left when it
            # ends, whatever the reason), so they need no timer: with thousands of runs, a
            # timer per wait was a measurable share of the event loop's work. A run driven by
            # another process is polled at the usual interval.
            await watch.wait(None if run_id in self._active
                             else self.settings.poll_interval_seconds)
            run, watch = watch.run, None

    def _watch(self, run_id: str) -> _Watch:
        watch = self._watches.get(run_id)
        if watch is None:
            watch = self._watches[run_id] = _Watch()
        return watch

    def _notify(self, run_id: str, run: Run | None) -> None:
        """Wake the run's waiters with its new state (None: they read it from the store)."""
        watch = self._watches.pop(run_id, None)
        if watch is not None:
            watch.notify(run)

    # -- driving runs ----------------------------------------------------------------------

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    def _wake(self) -> None:
        self._wakeup.set()

    def _woken_by_store(self, at_ms: int | None) -> None:
        """Another process made work (a store that can tell, e.g. PostgreSQL NOTIFY)."""
        if not self._worker:
            return  # a runtime that only drives its own runs has nothing to claim
        if at_ms is not None:
            heapq.heappush(self._timers, at_ms)
        self._wake()

    def _launch(self, claim: Claim, *, fresh: bool) -> None:
        loop = asyncio.get_running_loop()
        self._active[claim.run.run_id] = loop.create_task(self._execute(claim, fresh))

    async def _dispatch_loop(self) -> None:
        while True:
            try:
                await self._claim_runnable()
            except StoreError as exc:  # the database is away: keep polling until it is back
                logger.warning("cannot claim runs: %s", exc.message)
            timeout = self.settings.poll_interval_seconds
            now = self.clock.now_ms()
            while self._timers and self._timers[0] <= now:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = min(timeout, (self._timers[0] - now) / 1000 + 0.001)
            with anyio.move_on_after(timeout):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()

    async def _claim_runnable(self) -> None:
        if self._stop.requested:
            return
        free = self.settings.max_concurrent_runs - len(self._active)
        if free <= 0:
            self._backlog = True
            return
        run_ids = None if self._worker else sorted(self._own - self._active.keys())
        if run_ids == []:
            return
        claims = await self.store.claim_runs(
            owner=self.owner, now_ms=self.clock.now_ms(), lease_ms=self._lease_ms, limit=free,
            owner_is_dead=owner_is_dead, run_ids=run_ids)
        self._backlog = len(claims) == free
        for claim in claims:
            self._launch(claim, fresh=False)

    async def _heartbeat_loop(self) -> None:
        interval = min(self.settings.poll_interval_seconds, self.settings.lease_seconds / 3)
        while True:
            await anyio.sleep(interval)
            if not self._active:
                continue
            try:
                lost = await self.store.heartbeat(owner=self.owner, run_ids=list(self._active),
                                                  now_ms=self.clock.now_ms(),
                                                  lease_ms=self._lease_ms)
            except StoreError as exc:
                # The database is away. Runs keep going; their writes fail (and they stop)
                # until it is back; if it stays away, the leases lapse and others take over.
                logger.warning("cannot renew leases: %s", exc.message)
                continue
            for run_id in lost:  # cancelled elsewhere, or taken over: stop acting for it
                task = self._active.get(run_id)
                if task is not None:
                    task.cancel()

    async def _execute(self, claim: Claim, fresh: bool) -> None:
        run_id = claim.run.run_id
        try:
            if self.telemetry is None:
                await self._drive(claim, fresh)
            else:
                with self.telemetry.run_span(claim.run, resumed=not fresh):
                    await self._drive(claim, fresh)
        except asyncio.CancelledError:
            pass  # cancelled by us (run cancelled, claim lost, shutdown): the task just ends
        except Exception:  # a bug in Tether itself: keep the worker alive, say what happened
            logger.exception("run %s: unexpected error in the runtime; the run will be "
                             "resumed when its claim is released", run_id)
        finally:
            self._active.pop(run_id, None)
            # Waiters still here were not told how the run went (it was cancelled, its claim
            # lost, or it stopped for shutdown): they read it from the store.
            self._notify(run_id, None)
            self.store.forget_claim(run_id, claim.fence)
            if self._drained is not None and not self._active:
                self._drained.set()
            if self._backlog:
                self._wake()

    async def _drive(self, claim: Claim, fresh: bool) -> None:
        run = claim.run
        records = [] if fresh else await self.store.load_journal(run.run_id)
        journal = RunJournal(self.store, run.run_id, claim.fence, records,
                             lazy_limit=self.settings.lazy_records_per_run)
        scope = RunScope(run, journal, self._stop)
        scope.park = functools.partial(self._suspend, scope)
        try:
            agent = self._agent_for_run(run)
        except AgentNotFound as exc:
            await self._settle(scope, RunStatus.NEEDS_ATTENTION, None,
                               {**exc.to_json(), "code": "agent.unavailable"})
            return
        if self.events.active:  # the event's data is built only for a listener
            self.events.publish(run.run_id, "run.started" if fresh else "run.resumed",
                                {"agent": run.agent, "version": run.agent_version,
                                 "recorded": len(records)})
        status, result, error = RunStatus.COMPLETED, None, None
        try:
            result = await agent.fn(Context(self, scope, agent), **run.input)
        except (Suspended, Abandoned):
            return
        except NeedsAttention as exc:
            status, error = RunStatus.NEEDS_ATTENTION, exc.error
        except StoreError:
            return  # the journal refused a write: another worker or the operator has the run
        except BaseExceptionGroup as group:
            # Parallel effects in a task group (ToolLoop): the run parked or stopped in one of
            # them arrives wrapped; anything else in the group is the run's failure.
            rest = group.split((Suspended, Abandoned))[1]
            if rest is None:
                return
            if not isinstance(rest, Exception):
                raise
            status, error = RunStatus.FAILED, failure_json(rest)
        except Exception as exc:  # noqa: BLE001 - any agent failure is the run's outcome
            status, error = RunStatus.FAILED, failure_json(exc)
        if journal.write_failed is not None:
            return  # the agent swallowed a refused write; abandon all the same
        if journal.nondeterminism is not None:
            status, result, error = (RunStatus.NEEDS_ATTENTION, None,
                                     journal.nondeterminism.to_json())
        await self._settle(scope, status, result, error)

    async def _settle(self, scope: RunScope, status: RunStatus, result: Any,
                      error: JSONObject | None) -> None:
        run = scope.run
        result_text = None
        if status is RunStatus.COMPLETED:
            try:
                result_text = _json.encode(result)
            except (TypeError, ValueError) as exc:
                status, error = RunStatus.FAILED, {
                    "code": "agent.bad_result", "type": type(exc).__name__,
                    "message": f"the agent returned a value that is not JSON: {exc}"}
        now_ms = self.clock.now_ms()
        try:
            await self.store.finish_run(
                run.run_id, scope.journal.fence, status=status, result=result_text,
                error=None if error is None else _json.encode(error), now_ms=now_ms)
        except StoreError:
            return
        # What the store now holds (settling releases the run and clears its timer).
        final = dataclasses.replace(
            run, status=status, error=error, owner=None, updated_at_ms=now_ms, wake_at_ms=None,
            waiting_for=None, result=None if result_text is None else _json.decode(result_text))
        if self.events.active:
            self.events.publish(run.run_id, f"run.{status}", {
                "replayed": scope.journal.replayed, "executed": scope.journal.executed,
                **({"error": error} if error else {})})
        if self.telemetry is not None:  # settled in the run's task: its span is current
            self.telemetry.run_settled(str(status), error)
        if status.is_terminal:
            self._own.discard(run.run_id)
            await self._release_workspace(run)
        self._notify(run.run_id, final)

    async def _release_workspace(self, run: Run) -> None:
        """Remove the run's sandbox workspace, if a ``workspace = "run"`` profile made one."""
        if self.sandbox.keeps_run_workspaces:  # no thread hop per run otherwise
            await anyio.to_thread.run_sync(self.sandbox.release_run, run.tenant, run.run_id)

    async def _suspend(self, scope: RunScope, *, wake_at_ms: int | None,
                       waiting_for: str | None) -> bool:
        """Park the run in the store; False when the awaited signal is already there."""
        run = scope.run
        now_ms = self.clock.now_ms()
        parked = await self.store.suspend_run(
            run.run_id, scope.journal.fence, wake_at_ms=wake_at_ms, waiting_for=waiting_for,
            now_ms=now_ms)
        if not parked:
            return False
        self.events.publish(run.run_id, "run.waiting",
                            {"wake_at_ms": wake_at_ms, "waiting_for": waiting_for})
        if wake_at_ms is not None:
            heapq.heappush(self._timers, wake_at_ms)
            self._wake()
        self._notify(run.run_id, dataclasses.replace(
            run, status=RunStatus.WAITING, wake_at_ms=wake_at_ms, waiting_for=waiting_for,
            owner=None, updated_at_ms=now_ms))
        return True

"""``GovernanceStage``: the policy and approval gate of the effect pipeline, and its audit.

It sits after journal replay and argument validation and before a side effect's intent, so
a decision is taken once per effect: on replay the journal answers first, with the decision
(in the record's detail) and a refusal (as the recorded error) as they were.

* ``start``: ``Runtime.start`` asks ``admit`` (``start_run`` on the agent); a child run's start
  effect is asked the same for the parent's principal.
* ``llm``: ``call_model`` on the model, and the tools offered are cut to those the run could
  be allowed to call (the model never learns of the others).
* ``tool``: ``call_tool`` with the arguments in the context. A call that a forbid marked
  ``@approval`` holds becomes an approval request; the run parks (no memory held) until a
  person decides or the request expires, then replays up to here and asks again.

Every decision and every outcome is an audit record.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tether import _json
from tether._clock import Clock
from tether.errors import TetherError, UsageError
from tether.governance._audit import AuditLog
from tether.governance._canonical import canonical
from tether.governance._policy import APPROVAL, Decision, PolicyEngine
from tether.runtime import Effect, Handler, RunScope, Suspended
from tether.store import Approval, NewRun, RecordState, Store, approval_signal
from tether.types import JSONObject, Run

_KEY = "tether.governance"


class _Flight:
    """The governed effects of one run execution that are in flight.

    A call waiting for approval parks the whole run, but only once every other governed
    effect of the run has finished (or is waiting for approval too): parking cancels the
    run's task, and a sibling tool cancelled half-way would be uncertain after the replay.
    """

    __slots__ = ("_changed", "active", "last_reply", "parked", "run_parked")

    def __init__(self) -> None:
        self.active = 0
        self.parked: dict[int, int] = {}  # seq -> expires_at_ms, of calls awaiting approval
        self.run_parked = False
        self.last_reply: JSONObject | None = None
        self._changed = asyncio.Event()

    def poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


def _flight(scope: RunScope) -> _Flight:
    if scope.stage_state is None:
        scope.stage_state = {}
    flight = scope.stage_state.get(_KEY)
    if flight is None:
        flight = scope.stage_state[_KEY] = _Flight()
    assert isinstance(flight, _Flight)
    return flight


def run_info(run: Run | NewRun) -> JSONObject:
    """The ``run`` of a decision's context (its schema type ``RunInfo``)."""
    return {"id": run.run_id, "agent": run.agent, "tenant": run.tenant,
            "principal": run.principal}


class GovernanceStage:
    """Policy decisions, approvals and audit records for every governed effect.

    Args:
        engine: the policy engine.
        audit: the audit log.
        clock: the runtime's clock (approval expiry).
        approval_timeout_seconds: how long an approval request waits before it expires.
    """

    kinds: frozenset[str] | None = frozenset({"tool", "llm", "start"})

    def __init__(self, engine: PolicyEngine, audit: AuditLog, *, clock: Clock,
                 approval_timeout_seconds: float = 86_400.0) -> None:
        self.engine = engine
        self.audit = audit
        self._clock = clock
        self._timeout_ms = int(approval_timeout_seconds * 1000)

    # -- runs ------------------------------------------------------------------------------

    async def admit(self, run: NewRun, store: Store) -> None:
        """``start_run``: may this principal (of this tenant) start this agent?"""
        decision = self.engine.authorize(
            principal=run.principal, tenant=run.tenant, action="start_run", resource=run.agent,
            context={"run": run_info(run)})
        self._record(store, run.tenant, {
            "type": "decision", "principal": run.principal, "agent": run.agent,
            "run_id": run.run_id, "decision": decision.to_json(),
            "input_digest": self.audit.digest(run.tenant, _json.decode(run.input))})
        await self._checkpoint_if_due(store, run.tenant)
        if not decision.allowed:
            raise decision.denied()

    # -- effects ---------------------------------------------------------------------------

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        flight = _flight(effect.scope)
        flight.active += 1
        try:
            if effect.kind == "tool":
                return await self._tool(effect, flight, call_next)
            if effect.kind == "llm":
                return await self._llm(effect, flight, call_next)
            return await self._child(effect, call_next)
        finally:
            flight.active -= 1
            flight.poke()

    async def _child(self, effect: Effect, call_next: Handler) -> Any:
        run = effect.scope.run
        decision = self.engine.authorize(
            principal=run.principal, tenant=run.tenant, action="start_run", resource=effect.name,
            context={"run": run_info(run)})
        return await self._governed(effect, decision, call_next, {})

    async def _llm(self, effect: Effect, flight: _Flight, call_next: Handler) -> Any:
        run = effect.scope.run
        decision = self.engine.authorize(
            principal=run.principal, agent=run.agent, tenant=run.tenant, action="call_model",
            resource=effect.name, context={"run": run_info(run)})
        extra: JSONObject = {}
        call = effect.request
        if decision.allowed and call.tools:
            visible = self.engine.visible_tools(principal=run.principal, agent=run.agent,
                                                tools=[spec.name for spec in call.tools])
            hidden = [spec.name for spec in call.tools if spec.name not in visible]
            if hidden:
                call.tools = [spec for spec in call.tools if spec.name in visible]
                extra["hidden_tools"] = hidden
        value = await self._governed(effect, decision, call_next, extra)
        flight.last_reply = value
        return value

    async def _tool(self, effect: Effect, flight: _Flight, call_next: Handler) -> Any:
        run = effect.scope.run
        context: JSONObject = {"args": effect.request.args, "run": run_info(run),
                               "approval": {"granted": False, "approver": ""}}
        decision = self.engine.authorize(
            principal=run.principal, agent=run.agent, tenant=run.tenant, action="call_tool",
            resource=effect.name, context=context)
        extra: JSONObject = {"args_digest": self.audit.digest(run.tenant, effect.request.args)}
        if decision.effect == APPROVAL:
            approval, unbound = await self._approval(effect, flight, decision)
            extra["approval"] = {"id": approval.approval_id, "by": approval.decided_by,
                                 "reason": approval.reason, "at_ms": approval.decided_at_ms,
                                 "policies": list(decision.policies)}
            if unbound is not None:
                extra["approval"]["unbound"] = unbound
                decision = dataclasses.replace(
                    decision, effect="deny",
                    reason=f"{decision.action} on {decision.resource}: approval "
                           f"{approval.approval_id} {unbound}, so it does not cover this call; "
                           "ask for the call again")
            elif approval.status != "approved":
                decision = dataclasses.replace(
                    decision, effect="deny",
                    reason=f"{decision.action} on {decision.resource}: approval "
                           f"{approval.approval_id} was {approval.status}"
                           + (f" by {approval.decided_by}" if approval.decided_by else "")
                           + (f": {approval.reason}" if approval.reason else ""))
            else:
                context["approval"] = {"granted": True, "approver": approval.decided_by or ""}
                decision = self.engine.authorize(
                    principal=run.principal, agent=run.agent, tenant=run.tenant,
                    action="call_tool", resource=effect.name, context=context,
                    approved_by=approval.decided_by or "")
        return await self._governed(effect, decision, call_next, extra)

    async def _governed(self, effect: Effect, decision: Decision, call_next: Handler,
                        extra: JSONObject) -> Any:
        """Journal and audit the decision; act if allowed; audit the outcome."""
        run = effect.scope.run
        store = effect.scope.journal.store
        effect.detail["policy"] = {**decision.to_json(), **{
            k: v for k, v in extra.items() if k in ("hidden_tools", "approval")}}
        base: JSONObject = {"principal": run.principal, "agent": run.agent,
                            "run_id": run.run_id, "seq": effect.seq, "kind": effect.kind,
                            "name": effect.name}
        self._record(store, run.tenant, {**base, **extra, "type": "decision",
                                         "decision": decision.to_json()})
        if not decision.allowed:
            await self._checkpoint_if_due(store, run.tenant)
            raise decision.denied()
        try:
            value = await call_next(effect)
        except TetherError as exc:
            await self._outcome(effect, base, {"status": "error", "code": exc.code})
            raise
        await self._outcome(effect, base, {
            "status": "ok", "result_digest": self.audit.digest(run.tenant, value)})
        return value

    async def _outcome(self, effect: Effect, base: JSONObject, outcome: JSONObject) -> None:
        record: JSONObject = {**base, "type": "effect", "outcome": outcome,
                              "attempts": max(effect.attempts, 1)}
        if "usage" in effect.detail:
            record["usage"] = effect.detail["usage"]
        tenant = effect.scope.run.tenant
        store = effect.scope.journal.store
        self._record(store, tenant, record)
        await self._checkpoint_if_due(store, tenant)

    # -- approvals -------------------------------------------------------------------------

    async def _approval(self, effect: Effect, flight: _Flight, decision: Decision,
                        ) -> tuple[Approval, str | None]:
        """The decided approval of this call: asked for, waited for (parking the run),
        expired when its time is up. Raises ``Suspended`` when the run parks.

        The approval is found by ``run_id:seq``, but it covers only the call it was asked
        for: after a replay that lost lazy journal writes, a new model reply may put another
        call at the same seq. Then it comes back with why it does not match (and, while
        still pending, is settled as denied so nobody approves a call that no longer
        exists); the caller denies the call rather than park on someone else's request."""
        scope = effect.scope
        run, store = scope.run, scope.journal.store
        approval_id = f"{run.run_id}:{effect.seq}"
        approval = await store.get_approval(approval_id)
        if approval is None:
            now = self._clock.now_ms()
            message = flight.last_reply or await self._asking_reply(effect)
            approval = await store.request_approval(Approval(
                approval_id=approval_id, run_id=run.run_id, seq=effect.seq, tenant=run.tenant,
                principal=run.principal, agent=run.agent, tool=effect.name,
                args=_json.encode(effect.request.args),
                message=None if message is None else _json.encode(_asking(message, effect)),
                policies=_json.encode(list(decision.policies)), status="pending",
                requested_at_ms=now, expires_at_ms=now + self._timeout_ms))
            self._record(store, run.tenant, {
                "type": "approval.requested", "principal": run.principal, "agent": run.agent,
                "run_id": run.run_id, "seq": effect.seq, "name": effect.name,
                "approval_id": approval_id, "policies": list(decision.policies),
                "args_digest": self.audit.digest(run.tenant, effect.request.args),
                "expires_at_ms": approval.expires_at_ms})
        unbound = _unbound(approval, effect)
        if unbound is None:
            return await self.await_decision(effect, approval), None
        if approval.status == "pending":
            try:
                approval = await store.decide_approval(
                    approval_id, status="denied", by="tether",
                    reason=f"superseded: the call at step {effect.seq} is now another one",
                    now_ms=self._clock.now_ms())
                self._record(store, run.tenant, {
                    "type": "approval.decided", "approval_id": approval_id,
                    "run_id": run.run_id, "seq": effect.seq, "status": "denied",
                    "by": "tether", "unbound": unbound})
            except UsageError:  # decided meanwhile: it still does not cover this call
                approval = await store.get_approval(approval_id) or approval
        return approval, unbound

    @property
    def timeout_ms(self) -> int:
        """How long an approval request waits before it expires."""
        return self._timeout_ms

    async def await_decision(self, effect: Effect, approval: Approval) -> Approval:
        """The approval once decided: expired when its time is up, else waited for with the
        run parked (raises ``Suspended`` then). Other stages use it for their own requests."""
        flight = _flight(effect.scope)
        run, store = effect.scope.run, effect.scope.journal.store
        approval_id = approval.approval_id
        while True:
            if approval.status == "pending" and self._clock.now_ms() >= approval.expires_at_ms:
                try:
                    approval = await store.decide_approval(
                        approval_id, status="expired", by="tether",
                        reason="not decided in time", now_ms=self._clock.now_ms())
                    self._record(store, run.tenant, {
                        "type": "approval.decided", "approval_id": approval_id,
                        "run_id": run.run_id, "seq": effect.seq, "status": "expired",
                        "by": "tether"})
                except UsageError:  # decided meanwhile: that decision stands
                    approval = await store.get_approval(approval_id) or approval
            if approval.status != "pending":
                return approval
            await self._park(effect, flight, approval)
            approval = await store.get_approval(approval_id) or approval

    async def _park(self, effect: Effect, flight: _Flight, approval: Approval) -> None:
        """Park the run once nothing else governed is in flight; returns instead when the
        decision arrived meanwhile."""
        scope, seq = effect.scope, effect.seq
        assert scope.park is not None, "the runtime sets RunScope.park"
        flight.parked[seq] = approval.expires_at_ms
        flight.active -= 1
        flight.poke()
        try:
            while True:
                if flight.run_parked:
                    raise Suspended
                if flight.active == 0 and min(flight.parked) == seq:
                    if await scope.park(wake_at_ms=min(flight.parked.values()),
                                        waiting_for=approval_signal(seq)):
                        flight.run_parked = True
                        raise Suspended
                    return
                await flight.changed()
        finally:
            flight.parked.pop(seq, None)
            flight.active += 1
            flight.poke()

    async def _asking_reply(self, effect: Effect) -> JSONObject | None:
        """The model reply that asked for this call, from the journal (after a restart)."""
        records = await effect.scope.journal.store.load_journal(effect.scope.run.run_id)
        for record in reversed(records):
            if record.seq < effect.seq and record.kind == "llm" and record.state == RecordState.OK:
                value = _json.decode(record.value or "null")
                return value if isinstance(value, dict) else None
        return None

    # -- audit -----------------------------------------------------------------------------

    async def close(self, store: Store) -> None:
        """When the runtime closes: anchor the tail of every chain written here, so a tail
        cut off after a clean shutdown is caught by ``tether audit verify``."""
        await self.audit.checkpoint_pending(store)

    def _record(self, store: Store, tenant: str, record: JSONObject) -> None:
        # Lazy: it commits with the next batch, and before any side effect's durable intent.
        pending = self.audit.append(store, tenant, record)
        assert pending is None, "a lazy append has nothing to wait for"

    async def _checkpoint_if_due(self, store: Store, tenant: str) -> None:
        if self.audit.checkpoint_due(tenant):
            await self.audit.checkpoint(store, tenant)


def _unbound(approval: Approval, effect: Effect) -> str | None:
    """Why ``approval`` does not cover this tool call (another tool, other arguments, by
    their canonical JSON), or None when it is the very call that was asked for."""
    if approval.tool != effect.name:
        return f"was asked for tool {approval.tool!r}, not {effect.name!r}"
    if canonical(_json.decode(approval.args)) != canonical(effect.request.args):
        return f"was asked for {approval.tool!r} with other arguments"
    return None


def _asking(reply: JSONObject, effect: Effect) -> JSONObject:
    """What an approver sees of the model's reply: its text and the matching call."""
    calls = [c for c in reply.get("tool_calls") or [] if c.get("name") == effect.name]
    same = [c for c in calls if c.get("args") == effect.request.args]
    return {"text": reply.get("text"), "tool_call": (same or calls or [None])[0]}


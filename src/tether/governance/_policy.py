"""``PolicyEngine``: Cedar decisions for runs, tools and models, default deny, fail closed.

Who may do something is the *intersection* of two decisions: the run's principal (a user or
a service account) must be permitted, and so must the agent acting for it. An agent cannot
do what its principal may not (no confused deputy), and a principal's permissions do not
reach tools its agent was never granted.

Cedar skips a policy whose evaluation errors; a ``forbid`` that errors is then silently a
no-op and the call may be allowed (reproduced in the research, and reported upstream). So
any evaluation error here denies, whatever Cedar decided, and the error is on the record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy
import orjson

from tether.errors import PolicyDenied, PolicyInvalid
from tether.governance._bundle import GLOBAL_ATTRIBUTE, Bundle, load_bundle, signature
from tether.types import JSONObject

ALLOW, DENY, APPROVAL = "allow", "deny", "approval"

RESOURCE_TYPES = {"start_run": "Agent", "call_tool": "Tool", "call_model": "Model",
                  "approve": "Tool", "read_run": "Run", "cancel_run": "Run",
                  "signal_run": "Run", "resolve_run": "Run"}
"""Every action the runtime, the CLI and the server ask about, and its resource type."""

RUN_ACTIONS = frozenset(action for action, kind in RESOURCE_TYPES.items() if kind == "Run")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one authorization, as it is journaled and audited."""

    effect: str
    """``allow``, ``deny``, or ``approval`` (allowed once a person approves)."""
    action: str
    resource: str
    policies: tuple[str, ...] = ()
    """The ``@id`` of every policy that decided; empty for a default deny."""
    errors: tuple[str, ...] = ()
    bundle: str = ""
    reason: str = ""
    approved_by: str | None = None

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW

    def to_json(self) -> JSONObject:
        data: JSONObject = {"effect": self.effect, "action": self.action,
                            "resource": self.resource, "policies": list(self.policies),
                            "bundle": self.bundle}
        if self.errors:
            data["errors"] = list(self.errors)
        if self.approved_by is not None:
            data["approved_by"] = self.approved_by
        return data

    def denied(self) -> PolicyDenied:
        """The error a denied caller gets."""
        return PolicyDenied(self.reason, action=self.action, resource=self.resource,
                            policies=list(self.policies), errors=list(self.errors))


def cedar_value(value: Any) -> Any:
    """A JSON value as Cedar context: Cedar has no floats, so integral ones become integers
    and others strings (a policy comparing such a number errors, which denies)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): cedar_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cedar_value(v) for v in value]
    return value


def _context_json(context: JSONObject) -> str:
    """The Cedar context as JSON text, encoded once for both requests of a decision (Cedar
    would otherwise encode the dict once per request)."""
    value = cedar_value(context)
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # beyond orjson (an integer over 64 bits): Cedar refuses it, and denies
        return json.dumps(value)


@dataclass(slots=True)
class _State:
    bundle: Bundle | None = None
    error: PolicyInvalid | None = None
    signature: tuple[tuple[str, int, int], ...] = ()
    checked_at: float = -math.inf
    listing: dict[tuple[str, str, str | None, str], bool] = field(default_factory=dict)


class PolicyEngine:
    """Decisions over the policy directory, reloaded when its files change.

    Args:
        policy_dir: ``*.cedar`` files, one ``*.cedarschema`` and the entities file.
        entities: the entities file's name in ``policy_dir``.
        reload_check_seconds: how often to look for changed files.
        monotonic: the clock for that (injected in tests).

    Files that stop loading after an edit deny every request until they load again (the
    error is in each decision): an edit meant to forbid something must never be skipped.
    """

    def __init__(self, policy_dir: Path, entities: str = "entities.json", *,
                 reload_check_seconds: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.policy_dir = Path(policy_dir)
        self._entities = entities
        self._every = reload_check_seconds
        self._monotonic = monotonic
        self._state = _State()
        self.reloads = 0  # times the files were parsed, for tests

    # -- loading ---------------------------------------------------------------------------

    def bundle(self) -> Bundle:
        """The current bundle, reloaded first if the files changed.

        Raises:
            PolicyInvalid: the files do not load (now).
        """
        state = self._state
        now = self._monotonic()
        if now - state.checked_at >= self._every:
            state.checked_at = now
            current = signature(self.policy_dir, self._entities)
            if current != state.signature or (state.bundle is None and state.error is None):
                state.signature = current
                state.listing.clear()
                self.reloads += 1
                try:
                    state.bundle, state.error = load_bundle(self.policy_dir, self._entities), None
                except PolicyInvalid as exc:
                    state.bundle, state.error = None, exc
        if state.error is not None:
            raise state.error
        assert state.bundle is not None
        return state.bundle

    def check(self) -> Bundle:
        """Load the files now, whatever changed (``tether policy check``)."""
        self._state.checked_at = -math.inf
        self._state.signature = ()
        return self.bundle()

    # -- identity --------------------------------------------------------------------------

    def principal_problem(self, principal: str, tenant: str | None = None) -> str | None:
        """Why ``principal`` cannot act (in ``tenant``), or None when it can be asked about."""
        bundle = self.bundle()
        if principal not in bundle.principals:
            return (f"unknown principal {principal!r}: declare it as a User or ServiceAccount "
                    f"in {self.policy_dir / self._entities}")
        if tenant is None or principal in bundle.global_principals:
            return None
        home = bundle.tenants.get(principal)
        if home is None:
            # Fail closed: a principal nobody tied to a tenant must not act in all of them.
            return (f"principal {principal!r} has no tenant attribute, so it may act in no "
                    f"tenant ({tenant!r} asked): give it one in "
                    f"{self.policy_dir / self._entities}, or mark it "
                    f"\"{GLOBAL_ATTRIBUTE}\": true (declared in the schema as "
                    f"{GLOBAL_ATTRIBUTE}?: Bool) to let it act in every tenant")
        if home != tenant:
            return f"principal {principal!r} belongs to tenant {home!r}, not {tenant!r}"
        return None

    # -- decisions -------------------------------------------------------------------------

    def authorize(self, *, principal: str, action: str, resource: str,
                  context: JSONObject | None = None, agent: str | None = None,
                  tenant: str | None = None, approved_by: str | None = None) -> Decision:
        """Decide whether ``principal`` (and ``agent``, acting for it) may do ``action`` on
        ``resource``. With ``approved_by``, the ``@approval`` forbids count as satisfied.

        Never raises for a policy problem: unloadable files, unknown principals and
        evaluation errors are all denials that say why.
        """
        kind = RESOURCE_TYPES.get(action)
        if kind is None:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(RESOURCE_TYPES)}")
        target = f"{kind}::{resource}"
        try:
            bundle = self.bundle()
            problem = self.principal_problem(principal, tenant)
        except PolicyInvalid as exc:
            return Decision(DENY, action, target, errors=(exc.message,),
                            reason=f"denied: the policy files do not load: {exc.message}")
        if problem is None and agent is not None and agent not in bundle.agents:
            problem = (f"agent {agent!r} is not declared in {self.policy_dir / self._entities}, "
                       "so it holds no grant")
        if problem is not None:
            return Decision(DENY, action, target, bundle=bundle.version,
                            reason=f"{action} on {target} denied: {problem}")
        ctx = _context_json(context or {})
        resource_uid = {"type": kind, "id": resource}
        requests = [{"principal": bundle.principals[principal],
                     "action": {"type": "Action", "id": action},
                     "resource": resource_uid, "context": ctx}]
        if agent is not None:
            requests.append({**requests[0], "principal": {"type": "Agent", "id": agent}})
        return self._decide(bundle, requests, action, target, principal, agent, approved_by)

    def _decide(self, bundle: Bundle, requests: list[JSONObject], action: str, target: str,
                principal: str, agent: str | None, approved_by: str | None) -> Decision:
        policies = bundle.satisfied if approved_by is not None else bundle.policies
        results = cedarpy.is_authorized_batch(requests, policies, bundle.entities)
        errors = tuple(dict.fromkeys(bundle.rename(e) for r in results
                                     for e in r.diagnostics.errors))
        reasons = [list(r.diagnostics.reasons) for r in results]
        names = tuple(dict.fromkeys(bundle.name(p) for rs in reasons for p in rs))
        who = principal if agent is None else f"{principal} (agent {agent})"
        if errors:
            # Fail closed: an erroring forbid was skipped by Cedar, so an Allow cannot stand.
            return Decision(DENY, action, target, names, errors, bundle.version,
                            f"{action} on {target} denied for {who}: a policy failed to "
                            f"evaluate ({errors[0]})", approved_by)
        if all(r.allowed for r in results):
            return Decision(ALLOW, action, target, names, (), bundle.version,
                            f"{action} on {target} allowed for {who}", approved_by)
        denied = [rs for r, rs in zip(results, reasons, strict=True) if not r.allowed]
        if approved_by is None and all(rs and set(rs) <= bundle.approval_ids for rs in denied):
            after = cedarpy.is_authorized_batch(requests, bundle.satisfied, bundle.entities)
            if all(r.allowed and not r.diagnostics.errors for r in after):
                held = tuple(dict.fromkeys(bundle.name(p) for rs in denied for p in rs))
                return Decision(APPROVAL, action, target, held, (), bundle.version,
                                f"{action} on {target} for {who} needs a person's approval "
                                f"({', '.join(held)})")
        forbids = tuple(dict.fromkeys(bundle.name(p) for rs in denied for p in rs))
        because = (f"forbidden by {', '.join(forbids)}" if forbids
                   else "no policy permits it (default deny)")
        return Decision(DENY, action, target, forbids, (), bundle.version,
                        f"{action} on {target} denied for {who}: {because}", approved_by)

    def visible_tools(self, *, principal: str, agent: str | None, tools: Iterable[str],
                      ) -> set[str]:
        """The tools the model may be shown: those that some arguments could make allowed
        (Cedar partial evaluation with the context unknown). Fails closed: unknown
        principals, unloadable files and evaluation errors show nothing."""
        try:
            bundle = self.bundle()
            if self.principal_problem(principal) is not None:
                return set()
        except PolicyInvalid:
            return set()
        if agent is not None and agent not in bundle.agents:
            return set()
        cache = self._state.listing
        visible = set()
        for tool in tools:
            key = (bundle.version, principal, agent, tool)
            shown = cache.get(key)
            if shown is None:
                shown = cache[key] = all(
                    self._may_allow(bundle, who, tool) for who in
                    ([bundle.principals[principal]] if agent is None else
                     [bundle.principals[principal], {"type": "Agent", "id": agent}]))
            if shown:
                visible.add(tool)
        return visible

    @staticmethod
    def _may_allow(bundle: Bundle, who: dict[str, str], tool: str) -> bool:
        # The partial API takes uids only as Cedar text; JSON string escapes are Cedar's too.
        result = cedarpy.is_authorized_partial(
            {"principal": f"{who['type']}::{json.dumps(who['id'])}",
             "action": 'Action::"call_tool"', "resource": f"Tool::{json.dumps(tool)}"},
            bundle.policies, bundle.entities)
        return result.decision != cedarpy.Decision.Deny and not result.diagnostics.errors

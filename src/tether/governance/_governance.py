"""``Governance``: policies, audit and approvals built from one ``[governance]`` table."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tether import _json
from tether._clock import Clock, SystemClock
from tether.errors import ApprovalExpired, ApprovalNotFound, ConfigError, UsageError
from tether.governance._audit import AuditKeys, AuditLog, load_public_key, parse_public_key
from tether.governance._config import GovernanceConfig, load_governance_config
from tether.governance._identity import APIKeys
from tether.governance._limits_stages import limit_stages
from tether.governance._policy import DENY, RUN_ACTIONS, Decision, PolicyEngine
from tether.governance._stage import GovernanceStage, run_info
from tether.runtime import Stage
from tether.store import Approval, Store
from tether.types import JSONObject, Run


class Governance:
    """Everything governance needs, from its config; hand ``stages()`` to the ``Runtime``.

    Example::

        gov = Governance.from_config(Path("tether.toml"))
        async with tether.Runtime(stages=gov.stages()) as rt:
            ...
    """

    def __init__(self, config: GovernanceConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.engine = PolicyEngine(config.policy_dir, config.entities,
                                   reload_check_seconds=config.reload_check_seconds)
        pinned = (None if config.checkpoint_public_key is None
                  else parse_public_key(config.checkpoint_public_key))
        self.audit = AuditLog(AuditKeys.load_or_create(config.audit_dir, pinned=pinned),
                              config.checkpoints_path, clock=self.clock,
                              every=config.checkpoint_every,
                              interval_seconds=config.checkpoint_interval_seconds)
        self.api_keys = APIKeys(config.policy_dir / config.api_keys)
        self.stage = GovernanceStage(self.engine, self.audit, clock=self.clock,
                                     approval_timeout_seconds=config.approval_timeout_seconds)
        self.limits = limit_stages(config, self.clock, self.audit, self.stage)

    @classmethod
    def from_config(cls, path: Path | None = None, *, clock: Clock | None = None,
                    ) -> Governance | None:
        """From ``[governance]`` in ``path`` (default ``./tether.toml``); None without it."""
        config = load_governance_config(path)
        return None if config is None else cls(config, clock=clock)

    def stages(self) -> list[Stage]:
        """The pipeline stages to pass to ``Runtime(stages=...)``: policy and approvals, then
        residency, rate limits and budgets (each only when configured)."""
        return [self.stage, *self.limits]

    def authorize(self, *, principal: str, action: str, resource: str,
                  context: JSONObject | None = None, tenant: str | None = None) -> Decision:
        """A decision for the CLI and the server (``read_run``, ``cancel_run``, ...)."""
        return self.engine.authorize(principal=principal, action=action, resource=resource,
                                     context=context, tenant=tenant)

    def authorize_run(self, *, principal: str, tenant: str, run: Run, action: str) -> Decision:
        """May ``principal`` of ``tenant`` do ``action`` (``read_run``, ``cancel_run``,
        ``signal_run``, ``resolve_run``) on ``run``? A run of another tenant is refused
        before any policy is asked."""
        if action not in RUN_ACTIONS:
            raise ValueError(f"{action!r} is not an action on runs; one of "
                             f"{', '.join(sorted(RUN_ACTIONS))}")
        if run.tenant != tenant:
            target = f"Run::{run.run_id}"
            return Decision(DENY, action, target, reason=f"{action} on {target} denied: the "
                            f"run belongs to another tenant than {tenant!r}")
        return self.engine.authorize(principal=principal, tenant=tenant, action=action,
                                     resource=run.run_id, context={"run": run_info(run)})

    def check_run(self, store: Store, *, principal: str, tenant: str, run: Run,
                  action: str) -> Decision:
        """``authorize_run``, with a change (``cancel_run``, ``signal_run``, ``resolve_run``)
        audited in ``tenant``'s chain whether allowed or not; reads are not recorded. The
        one check the CLI and the HTTP server share, so both leave the same trail."""
        decision = self.authorize_run(principal=principal, tenant=tenant, run=run,
                                      action=action)
        if action != "read_run":
            self.audit.append(store, tenant, {
                "type": "decision", "principal": principal, "agent": run.agent,
                "run_id": run.run_id, "kind": "run", "name": action,
                "decision": decision.to_json()})
        return decision

    async def decide_approval(self, store: Store, approval_id: str, *, approve: bool, by: str,
                              reason: str) -> Approval:
        """Approve or deny a pending request as principal ``by``, who must be permitted the
        ``approve`` action on the tool; the decision wakes the run and is audited.

        Unless ``allow_self_approval`` is set, the run's own principal may not approve it
        (deny it, yes): one person must not both ask for and allow a held call.

        Raises:
            ApprovalNotFound, PolicyDenied (``by`` may not approve this), ApprovalExpired,
            UsageError (decided already).
        """
        if not reason.strip():
            raise UsageError("give a reason for the decision (--reason): it goes on the record")
        approval = await store.get_approval(approval_id)
        if approval is None:
            raise ApprovalNotFound(approval_id)
        own = approve and by == approval.principal and not self.config.allow_self_approval
        if own:
            decision = Decision(DENY, "approve", f"Tool::{approval.tool}", reason=(
                f"approve on Tool::{approval.tool} denied for {by}: {by} started run "
                f"{approval.run_id}, and may not approve its own calls (another principal "
                "permitted to approve must; governance.allow_self_approval = true lifts this)"))
        else:
            decision = self.engine.authorize(
                principal=by, tenant=approval.tenant, action="approve", resource=approval.tool,
                context={"args": _json.decode(approval.args),
                         "run": {"id": approval.run_id, "agent": approval.agent,
                                 "tenant": approval.tenant, "principal": approval.principal}})
        status = "approved" if approve else "denied"
        record: JSONObject = {"type": "approval.decided", "approval_id": approval_id,
                              "run_id": approval.run_id, "seq": approval.seq,
                              "principal": by, "status": status, "reason": reason,
                              "decision": decision.to_json()}
        if not decision.allowed:
            self.audit.append(store, approval.tenant, {
                **record, "status": "refused", "refused": "self_approval" if own else "policy"})
            await self.audit.checkpoint(store, approval.tenant)
            raise decision.denied()
        try:
            decided = await store.decide_approval(approval_id, status=status, by=by,
                                                  reason=reason, now_ms=self.clock.now_ms())
        except ApprovalExpired:
            self.audit.append(store, approval.tenant, {**record, "status": "refused",
                                                       "refused": "expired"})
            await self.audit.checkpoint(store, approval.tenant)
            raise
        self.audit.append(store, approval.tenant, record)
        await self.audit.checkpoint(store, approval.tenant)
        return decided

    async def checkpoint_all(self, store: Store) -> int:
        """Sign a checkpoint of every tenant's chain now; returns how many were written."""
        written = 0
        for tenant in await store.audit_tenants():
            if await self.audit.checkpoint(store, tenant) is not None:
                written += 1
        return written


def checkpoint_verifier(config: GovernanceConfig) -> Ed25519PublicKey:
    """The key checkpoints are verified with: the pinned ``checkpoint_public_key`` when set,
    else ``audit_dir/checkpoint.pub`` (trusting whoever can write that directory)."""
    if config.checkpoint_public_key is not None:
        return parse_public_key(config.checkpoint_public_key)
    path = config.audit_dir / "checkpoint.pub"
    if not path.exists():
        raise ConfigError(f"{path} does not exist, so there is no key to check checkpoints "
                          "with: set governance.checkpoint_public_key (`tether audit key` "
                          "prints it where the audit keys live)")
    return load_public_key(path)

"""``Governance``: policies, audit and approvals built from one ``[governance]`` table."""

from __future__ import annotations

from pathlib import Path

from tether import _json
from tether._clock import Clock, SystemClock
from tether.errors import ApprovalNotFound, UsageError
from tether.governance._audit import AuditKeys, AuditLog
from tether.governance._config import GovernanceConfig, load_governance_config
from tether.governance._identity import APIKeys
from tether.governance._policy import Decision, PolicyEngine
from tether.governance._stage import GovernanceStage
from tether.runtime import Stage
from tether.store import Approval, Store
from tether.types import JSONObject


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
        self.audit = AuditLog(AuditKeys.load_or_create(config.audit_dir),
                              config.checkpoints_path, clock=self.clock,
                              every=config.checkpoint_every,
                              interval_seconds=config.checkpoint_interval_seconds)
        self.api_keys = APIKeys(config.policy_dir / config.api_keys)
        self.stage = GovernanceStage(self.engine, self.audit, clock=self.clock,
                                     approval_timeout_seconds=config.approval_timeout_seconds)

    @classmethod
    def from_config(cls, path: Path | None = None, *, clock: Clock | None = None,
                    ) -> Governance | None:
        """From ``[governance]`` in ``path`` (default ``./tether.toml``); None without it."""
        config = load_governance_config(path)
        return None if config is None else cls(config, clock=clock)

    def stages(self) -> list[Stage]:
        """The pipeline stages to pass to ``Runtime(stages=...)``."""
        return [self.stage]

    def authorize(self, *, principal: str, action: str, resource: str,
                  context: JSONObject | None = None, tenant: str | None = None) -> Decision:
        """A decision for the CLI and the server (``read_run``, ``cancel_run``, ...)."""
        return self.engine.authorize(principal=principal, action=action, resource=resource,
                                     context=context, tenant=tenant)

    async def decide_approval(self, store: Store, approval_id: str, *, approve: bool, by: str,
                              reason: str) -> Approval:
        """Approve or deny a pending request as principal ``by``, who must be permitted the
        ``approve`` action on the tool; the decision wakes the run and is audited.

        Raises:
            ApprovalNotFound, PolicyDenied (``by`` may not approve this), UsageError
            (decided already).
        """
        if not reason.strip():
            raise UsageError("give a reason for the decision (--reason): it goes on the record")
        approval = await store.get_approval(approval_id)
        if approval is None:
            raise ApprovalNotFound(approval_id)
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
            self.audit.append(store, approval.tenant, {**record, "status": "refused"})
            await self.audit.checkpoint(store, approval.tenant)
            raise decision.denied()
        decided = await store.decide_approval(approval_id, status=status, by=by, reason=reason,
                                              now_ms=self.clock.now_ms())
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

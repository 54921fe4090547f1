"""Data residency: a tenant's data goes only to models, tools and MCP servers in its regions.

Models (``[models.NAME] region``), MCP servers (``[mcp.servers.NAME] region``) and tools
carry a region; ``regions`` below labels what carries none (a Python tool, a test model). A
tenant listed under ``tenants`` may send data only to those regions: a call elsewhere is
refused with ``ResidencyViolation`` before it acts, journaled as the call's outcome (a replay
sees the same refusal) and audited. A resource with no region is refused too for a restricted
tenant: where data would go unknown is not "allowed". There is no fallback: a refused call
is not tried on another model or server, least of all one outside the allowed set.

    [governance.residency]
    tenants = { acme-eu = ["eu"], globex = ["us", "eu"] }
    regions = { "tool:lookup_order" = "eu", "model:scripted" = "eu" }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.errors import ConfigError, ResidencyViolation
from tether.runtime import Effect, Handler
from tether.types import JSONObject


@dataclass(frozen=True, kw_only=True, slots=True)
class ResidencyConfig:
    """``[governance.residency]``."""

    tenants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Each restricted tenant's allowed regions; a tenant not listed is not restricted."""
    regions: Mapping[str, str] = field(default_factory=dict)
    """Regions of resources that carry none, as ``model:NAME`` / ``tool:NAME`` -> region."""

    def __post_init__(self) -> None:
        for tenant, allowed in self.tenants.items():
            if not allowed:
                raise ConfigError(f"governance.residency.tenants.{tenant} lists no region; "
                                  "list at least one, or remove the tenant to leave it free")
        for key in self.regions:
            if not key.startswith(("model:", "tool:")):
                raise ConfigError(f"governance.residency.regions key {key!r} must be "
                                  "model:NAME or tool:NAME")

    def allowed(self, tenant: str) -> frozenset[str] | None:
        """The tenant's regions, or None when it is not restricted."""
        return self.tenants.get(tenant)


class ResidencyStage:
    """Refuses model and tool calls that would leave the tenant's regions.

    Args:
        config: the tenants' regions and resource labels.
        audit: an ``AuditLog`` to record each refusal in the tenant's chain (optional; with
            governance's stage in front, the refused outcome is audited there as well).
    """

    kinds: frozenset[str] | None = frozenset({"llm", "tool"})

    def __init__(self, config: ResidencyConfig, *, audit: Any = None) -> None:
        self.config = config
        self._audit = audit

    def region_of(self, effect: Effect) -> str | None:
        """Where this call sends data: the resource's own region, else its label here."""
        kind = "model" if effect.kind == "llm" else "tool"
        resource = effect.request.model if effect.kind == "llm" else effect.request.tool
        own = getattr(resource, "region", None)
        return own if isinstance(own, str) and own else self.config.regions.get(
            f"{kind}:{effect.name}")

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        run = effect.scope.run
        allowed = self.config.allowed(run.tenant)
        if allowed is None:
            return await call_next(effect)
        region = self.region_of(effect)
        effect.detail["residency"] = {"region": region, "allowed": sorted(allowed)}
        if region in allowed:
            return await call_next(effect)
        kind = "model" if effect.kind == "llm" else "tool"
        where = (f"in region {region!r}" if region is not None
                 else "with no region declared")
        error = ResidencyViolation(
            f"tenant {run.tenant!r} may send data only to {', '.join(sorted(allowed))}; "
            f"{kind} {effect.name!r} is {where}. Use a {kind} in an allowed region"
            + ("" if region is not None else
               f", or label it: [governance.residency.regions] \"{kind}:{effect.name}\"")
            + ".", tenant=run.tenant, resource=f"{kind}:{effect.name}", region=region,
            allowed=sorted(allowed))
        if self._audit is not None:
            record: JSONObject = {"type": "residency.refused", "principal": run.principal,
                                  "agent": run.agent, "run_id": run.run_id, "seq": effect.seq,
                                  "kind": effect.kind, "name": effect.name, "region": region,
                                  "allowed": sorted(allowed)}
            self._audit.append(effect.scope.journal.store, run.tenant, record)
        raise error

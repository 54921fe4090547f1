"""The residency, rate-limit and budget stages a ``GovernanceConfig`` asks for, in order."""

from __future__ import annotations

from tether._clock import Clock
from tether.governance._audit import AuditLog
from tether.governance._budget import BudgetStage
from tether.governance._config import GovernanceConfig
from tether.governance._limits import LocalLimits, RateLimiter, RateLimitStage
from tether.governance._residency import ResidencyStage
from tether.governance._stage import GovernanceStage
from tether.runtime import Stage


def limit_stages(config: GovernanceConfig, clock: Clock, audit: AuditLog,
                 approvals: GovernanceStage) -> list[Stage]:
    """Residency first (a call that may not go anywhere spends nothing), then rate limits,
    then budgets (a call held by a limit holds no reservation while it waits)."""
    stages: list[Stage] = []
    if config.residency is not None and config.residency.tenants:
        stages.append(ResidencyStage(config.residency, audit=audit))
    if config.limits:
        default_max = config.budgets.default_max_tokens if config.budgets else 4096
        state = LocalLimits() if config.limits_state == "process" else None
        stages.append(RateLimitStage(config.limits, RateLimiter(clock, state),
                                     default_max_tokens=default_max))
    if config.budgets is not None:
        stages.append(BudgetStage(config.budgets, clock, audit=audit, approvals=approvals))
    return stages

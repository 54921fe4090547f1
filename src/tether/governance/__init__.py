"""Governance: who may do what (Cedar policies over identities), human approvals of single
tool calls, and a tamper-evident audit trail of every decision and effect.

Layout: ``_config.py`` (``[governance]`` in tether.toml), ``_bundle.py`` (the policy
directory, parsed and validated once), ``_policy.py`` (``PolicyEngine``: decisions, default
deny, fail closed), ``_stage.py`` (``GovernanceStage``: the pipeline stage), ``_audit.py``
(records, signed checkpoints, ``verify``), ``_canonical.py`` (canonical JSON, keyed digests),
``_identity.py`` (hashed API keys), ``_cases.py`` (table-driven policy tests),
``_governance.py`` (``Governance``: all of it from one config). Limits: ``_limits.py``
(GCRA rate limits, fair queueing), ``_budget.py`` (budget ledgers: reserve, reconcile),
``_residency.py`` (tenants' regions), ``_limits_config.py`` (their config tables),
``_limits_stages.py`` (their stages, in order), ``_kill.py`` (the kill switch).
"""

from tether.governance._audit import (
    AuditKeys,
    AuditLog,
    AuditReport,
    Problem,
    Unanchored,
    audit_report,
    load_public_key,
    parse_public_key,
    public_key_text,
    verify,
)
from tether.governance._budget import (
    MICRO,
    Allowance,
    BudgetConfig,
    BudgetStage,
    PeriodBudget,
    RunBudget,
    worst_case_tokens,
)
from tether.governance._bundle import Bundle, load_bundle
from tether.governance._canonical import canonical, keyed_digest
from tether.governance._cases import CaseResult, run_cases
from tether.governance._config import GovernanceConfig, load_governance_config
from tether.governance._governance import Governance, checkpoint_verifier
from tether.governance._identity import APIKeys, KeyIdentity
from tether.governance._kill import cancel_runs, live_runs
from tether.governance._limits import (
    LimitState,
    LocalLimits,
    RateLimit,
    RateLimiter,
    RateLimitStage,
)
from tether.governance._policy import RESOURCE_TYPES, Decision, PolicyEngine
from tether.governance._residency import ResidencyConfig, ResidencyStage
from tether.governance._stage import GovernanceStage

__all__ = [
    "APIKeys", "AuditKeys", "AuditLog", "Bundle", "CaseResult", "Decision", "Governance",
    "GovernanceConfig", "GovernanceStage", "KeyIdentity", "PolicyEngine", "Problem",
    "RESOURCE_TYPES", "canonical", "keyed_digest", "load_bundle", "load_governance_config",
    "load_public_key", "run_cases", "verify",
    "MICRO", "Allowance", "BudgetConfig", "BudgetStage", "LimitState", "LocalLimits", "PeriodBudget",
    "RateLimit", "RateLimitStage", "RateLimiter", "ResidencyConfig", "ResidencyStage",
    "RunBudget", "cancel_runs", "live_runs", "worst_case_tokens",
    "AuditReport", "Unanchored", "audit_report", "checkpoint_verifier", "parse_public_key",
    "public_key_text",
]

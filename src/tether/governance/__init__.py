"""Governance: who may do what (Cedar policies over identities), human approvals of single
tool calls, and a tamper-evident audit trail of every decision and effect.

Layout: ``_config.py`` (``[governance]`` in tether.toml), ``_bundle.py`` (the policy
directory, parsed and validated once), ``_policy.py`` (``PolicyEngine``: decisions, default
deny, fail closed), ``_stage.py`` (``GovernanceStage``: the pipeline stage), ``_audit.py``
(records, signed checkpoints, ``verify``), ``_canonical.py`` (canonical JSON, keyed digests),
``_identity.py`` (hashed API keys), ``_cases.py`` (table-driven policy tests),
``_governance.py`` (``Governance``: all of it from one config).
"""

from tether.governance._audit import AuditKeys, AuditLog, Problem, load_public_key, verify
from tether.governance._bundle import Bundle, load_bundle
from tether.governance._canonical import canonical, keyed_digest
from tether.governance._cases import CaseResult, run_cases
from tether.governance._config import GovernanceConfig, load_governance_config
from tether.governance._governance import Governance
from tether.governance._identity import APIKeys, KeyIdentity
from tether.governance._policy import RESOURCE_TYPES, Decision, PolicyEngine
from tether.governance._stage import GovernanceStage

__all__ = [
    "APIKeys", "AuditKeys", "AuditLog", "Bundle", "CaseResult", "Decision", "Governance",
    "GovernanceConfig", "GovernanceStage", "KeyIdentity", "PolicyEngine", "Problem",
    "RESOURCE_TYPES", "canonical", "keyed_digest", "load_bundle", "load_governance_config",
    "load_public_key", "run_cases", "verify",
]

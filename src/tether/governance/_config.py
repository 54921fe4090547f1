"""``[governance]`` in ``tether.toml``: where policies, keys and checkpoints live.

Read apart from ``tether.config`` (which owns ``[runtime]``): governance is optional, and a
file without the table runs ungoverned, as before.

    [governance]
    policy_dir = "policies"    # *.cedar policies, one *.cedarschema, entities.json
    audit_dir = ".tether/audit"
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tether.config import config_file, read_toml
from tether.errors import ConfigError

if TYPE_CHECKING:
    from tether.governance._budget import BudgetConfig
    from tether.governance._limits import RateLimit
    from tether.governance._residency import ResidencyConfig

DEFAULT_AUDIT_DIR = ".tether/audit"


@dataclass(frozen=True, kw_only=True, slots=True)
class GovernanceConfig:
    """Where governance finds its files, and its few numbers. Relative paths are relative to
    the directory of the ``tether.toml`` that named them."""

    policy_dir: Path
    """``*.cedar`` policy files, exactly one ``*.cedarschema`` (mandatory: policies and
    entities are validated against it), and the entities file."""

    entities: str = "entities.json"
    """The Cedar JSON entities file (tenants, users, service accounts, roles, agents, tools,
    models), inside ``policy_dir``."""

    audit_dir: Path = Path(DEFAULT_AUDIT_DIR)
    """The audit keys (HMAC secret, ed25519 signing key) and the signed checkpoints file.
    Point ``checkpoints`` elsewhere to keep them where the database's writer cannot reach."""

    checkpoints: Path | None = None
    """The signed checkpoints file (default: ``audit_dir/checkpoints.jsonl``)."""

    checkpoint_every: int = 1000
    """Sign a checkpoint of a tenant's chain after this many new records."""

    checkpoint_interval_seconds: float = 60.0
    """... or when this long has passed since the last one and records were added."""

    approval_timeout_seconds: float = 86_400.0
    """An approval request not decided within this long expires, and the call is denied."""

    reload_check_seconds: float = 1.0
    """How often the policy files are checked for changes (then parsed again)."""

    api_keys: str = "api_keys.json"
    """Hashed API keys and the principals they stand for, inside ``policy_dir``."""

    allow_self_approval: bool = False
    """Whether a principal may approve a call held in its own run. Off: the person who asked
    (through their agent) is not the person who checks."""

    checkpoint_public_key: str | None = None
    """The public key checkpoints must be signed with (``ed25519:<hex>``, as ``tether audit
    key`` prints it). When set, ``tether audit verify`` trusts it rather than
    ``audit_dir/checkpoint.pub``, and a runtime refuses to sign with any other key."""

    limits: tuple[RateLimit, ...] = ()
    """Rate limits (``[[governance.limits]]``, see ``governance/_limits.py``)."""

    limits_state: str = "store"
    """Where rate-limit state lives: ``store`` (shared by every worker on the store) or
    ``process`` (this process only)."""

    budgets: BudgetConfig | None = None
    """Budgets (``[governance.budgets]``, see ``governance/_budget.py``)."""

    residency: ResidencyConfig | None = None
    """Tenants' allowed regions (``[governance.residency]``, see ``governance/_residency.py``)."""

    def __post_init__(self) -> None:
        if self.limits_state not in ("store", "process"):
            raise ConfigError("governance.limits_state is store or process")
        if self.checkpoint_every < 1:
            raise ConfigError("governance.checkpoint_every must be at least 1")
        for name in ("checkpoint_interval_seconds", "approval_timeout_seconds",
                     "reload_check_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"governance.{name} must be positive")
        if self.checkpoint_public_key is not None:
            from tether.governance._audit import parse_public_key

            parse_public_key(self.checkpoint_public_key)

    @property
    def checkpoints_path(self) -> Path:
        return self.checkpoints or self.audit_dir / "checkpoints.jsonl"


_PATHS = {"policy_dir", "audit_dir", "checkpoints"}
_NUMBERS = {"checkpoint_every": int, "checkpoint_interval_seconds": float,
            "approval_timeout_seconds": float, "reload_check_seconds": float}


_BOOLS = {"allow_self_approval"}
_SECTIONS = {"limits", "budgets", "residency"}


def _section(key: str, raw: object) -> object:
    from tether.governance._limits_config import parse_budgets, parse_limits, parse_residency

    parse = {"limits": parse_limits, "budgets": parse_budgets, "residency": parse_residency}
    return parse[key](raw)


def load_governance_config(path: Path | None = None) -> GovernanceConfig | None:
    """The ``[governance]`` table of ``path`` (default ``./tether.toml`` when present), or
    None when there is no such file or table.

    Raises:
        ConfigError: naming the file and key, and what is allowed.
    """
    path = config_file(path)
    if path is None:
        return None
    document = read_toml(path)
    table = document.get("governance")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [governance] must be a table")
    known = {f.name for f in fields(GovernanceConfig)}
    base = path.parent
    values: dict[str, object] = {}
    for key, raw in table.items():
        where = f"{path} governance.{key}"
        if key not in known:
            raise ConfigError(f"{path}: unknown key governance.{key}; known keys: "
                              + ", ".join(sorted(known)))
        if key in _SECTIONS:
            values[key] = _section(key, raw)
        elif key in _PATHS:
            if not isinstance(raw, str):
                raise ConfigError(f"{where} must be a path (a string)")
            values[key] = base / raw
        elif key in _NUMBERS:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"{where} must be a number, not {raw!r}")
            values[key] = _NUMBERS[key](raw)
        elif key in _BOOLS:
            if not isinstance(raw, bool):
                raise ConfigError(f"{where} must be true or false, not {raw!r}")
            values[key] = raw
        else:
            if not isinstance(raw, str):
                raise ConfigError(f"{where} must be a string, not {raw!r}")
            values[key] = raw
    if "policy_dir" not in values:
        raise ConfigError(f"{path}: [governance] needs policy_dir (the directory of *.cedar "
                          "files, the *.cedarschema and entities.json)")
    values.setdefault("audit_dir", base / DEFAULT_AUDIT_DIR)
    try:
        return GovernanceConfig(**values)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None

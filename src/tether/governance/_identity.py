"""API keys that stand for principals, stored hashed (for the HTTP server).

A key is ``tk_<key id>_<secret>``. The file keeps, per key id, the SHA-256 of the whole key
and who it stands for; the key itself is shown once, when issued. A SHA-256 (not a slow
password hash) is right here: the secret is 256 random bits, so there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ConfigError


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who an API key stands for."""

    key_id: str
    principal: str
    tenant: str


class APIKeys:
    """The hashed API keys in one JSON file (``{key_id: {hash, principal, tenant}}``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{self.path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: must be a JSON object of key ids")
        return data

    def issue(self, principal: str, tenant: str) -> str:
        """Make a key for ``principal``; returns it (the only time it is seen whole)."""
        keys = self._load()
        key_id = secrets.token_hex(6)
        key = f"tk_{key_id}_{secrets.token_urlsafe(32)}"
        keys[key_id] = {"hash": hashlib.sha256(key.encode()).hexdigest(),
                        "principal": principal, "tenant": tenant}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(keys, handle, indent=2, sort_keys=True)
        temporary.replace(self.path)
        return key

    def revoke(self, key_id: str) -> bool:
        """Forget a key; False when there was none with that id."""
        keys = self._load()
        if keys.pop(key_id, None) is None:
            return False
        self.path.write_text(json.dumps(keys, indent=2, sort_keys=True), encoding="utf-8")
        return True

    def verify(self, key: str) -> KeyIdentity | None:
        """Who the key stands for, or None for a key that is malformed, unknown or revoked."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "tk":
            return None
        entry = self._load().get(parts[1])
        if entry is None:
            return None
        if not hmac.compare_digest(entry.get("hash", ""), hashlib.sha256(key.encode()).hexdigest()):
            return None
        return KeyIdentity(parts[1], entry["principal"], entry["tenant"])

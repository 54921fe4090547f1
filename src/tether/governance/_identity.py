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
import time
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
    """The hashed API keys in one JSON file (``{key_id: {hash, principal, tenant}}``).

    The file is read again only when it changes: every request is verified, and one
    ``stat`` costs far less than reading and parsing the file. A change is seen by its
    inode, size, mtime and ctime: ``issue`` replaces the file (a new inode), ``revoke``
    shrinks it, and any other write moves the timestamps, so a revoked key stops working
    with the next request. File timestamps tick coarser than writes can follow each other
    (milliseconds here, seconds on some filesystems), so a file changed in the last
    ``RECENT_NS`` is not trusted to look different after a second change: it is read
    again on every request until it has been still for that long (as git treats "racily
    clean" files).
    """

    RECENT_NS = 2_000_000_000

    def __init__(self, path: Path) -> None:
        self.path = path
        # Invariant: _cached is the parsed file as it was when stat gave _signature.
        self._signature: tuple[int, int, int, int] | None = None
        self._cached: dict[str, dict[str, str]] = {}

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._cached = None, {}
            return {}
        signature = (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
        if signature == self._signature:
            return self._cached
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{self.path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: must be a JSON object of key ids")
        recent = time.time_ns() - found.st_mtime_ns < self.RECENT_NS  # a write sets it to now
        self._signature, self._cached = (None if recent else signature), data
        return data

    def issue(self, principal: str, tenant: str) -> str:
        """Make a key for ``principal``; returns it (the only time it is seen whole)."""
        keys = dict(self._load())  # a copy: the cache stays what the file says
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
        keys = dict(self._load())
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

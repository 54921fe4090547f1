"""The audit trail: hash-chained records per tenant, and signed checkpoints beside them.

Each record is canonical JSON (``_canonical``); the store chains it to the previous record
of its tenant (``hash = sha256(previous hash || body)``, see ``Store.append_audit``). A chain
alone shows an edit, a deletion, an insertion or a reordering, but not a cut-off tail or a
chain rewritten from some point on; so every ``checkpoint_every`` records (or
``checkpoint_interval_seconds``) the head of the chain is signed with an ed25519 key and
appended to a separate file (put it on a mount the database's writer cannot rewrite). Every
checkpoint must then match the chain: the record at its size must carry its hash.

Arguments and results never enter a record: an HMAC-SHA256 of their canonical JSON does,
keyed per tenant (derived from one secret), so a record proves what a call carried without
keeping it, and the digest of a low-entropy argument cannot be brute-forced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tether._clock import Clock
from tether.errors import ConfigError
from tether.governance._canonical import canonical, keyed_digest
from tether.store import AUDIT_GENESIS, AuditRow, Commit, Store, chain_hash
from tether.types import JSONObject

RECORD_VERSION = 1
_NOTE = "tether-audit/v1"


def _write_secret(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, refusing to overwrite one that exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class AuditKeys:
    """The installation's audit secrets, kept in ``audit_dir`` (made on first use):
    ``hmac.key`` (tenant digest keys derive from it), ``checkpoint.key`` (ed25519, signs
    checkpoints) and ``checkpoint.pub`` (what a verifier needs, and all it needs)."""

    def __init__(self, secret: bytes, signing: Ed25519PrivateKey) -> None:
        self._secret = secret
        self._signing = signing
        self._tenant_keys: dict[str, bytes] = {}
        self.public = signing.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def load_or_create(cls, directory: Path) -> AuditKeys:
        directory.mkdir(parents=True, exist_ok=True)
        secret_path, key_path = directory / "hmac.key", directory / "checkpoint.key"
        if not secret_path.exists():
            _write_secret(secret_path, secrets.token_hex(32).encode())
        if not key_path.exists():
            fresh = Ed25519PrivateKey.generate()
            _write_secret(key_path, fresh.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            (directory / "checkpoint.pub").write_bytes(fresh.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        try:
            secret = bytes.fromhex(secret_path.read_text().strip())
            signing = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(f"{directory}: an audit key file is damaged ({exc})") from None
        if not isinstance(signing, Ed25519PrivateKey):
            raise ConfigError(f"{key_path}: not an ed25519 private key")
        return cls(secret, signing)

    def tenant_key(self, tenant: str) -> bytes:
        key = self._tenant_keys.get(tenant)
        if key is None:
            key = self._tenant_keys[tenant] = hmac.new(
                self._secret, b"tether-audit-tenant:" + tenant.encode(), hashlib.sha256).digest()
        return key

    def sign(self, note: str) -> str:
        return self._signing.sign(note.encode()).hex()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the checkpoint public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an ed25519 public key")
    return key


def checkpoint_note(tenant: str, size: int, head: str, at_ms: int) -> str:
    """What a checkpoint signs (a C2SP-style note: origin, size, head, time)."""
    return f"{_NOTE}\n{tenant}\n{size}\n{head}\n{at_ms}\n"


class AuditLog:
    """Appends audit records and signs checkpoints.

    Args:
        keys: the installation's audit keys.
        checkpoints: the file signed checkpoints are appended to.
        clock: the time source for record timestamps.
        every: records of a tenant between two checkpoints.
        interval_seconds: or this long, when records were added meanwhile.
    """

    def __init__(self, keys: AuditKeys, checkpoints: Path, *, clock: Clock, every: int = 1000,
                 interval_seconds: float = 60.0) -> None:
        self.keys = keys
        self.checkpoints = checkpoints
        self._clock = clock
        self._every = every
        self._interval_ms = int(interval_seconds * 1000)
        self._since: dict[str, int] = {}  # records appended since the tenant's last checkpoint
        self._last_ms: dict[str, int] = {}

    def digest(self, tenant: str, value: Any) -> str:
        """The tenant-keyed digest of a JSON value (arguments, results, messages)."""
        return keyed_digest(self.keys.tenant_key(tenant), value)

    def append(self, store: Store, tenant: str, record: JSONObject,
               commit: Commit = Commit.LAZY) -> Awaitable[None] | None:
        """Append one record (with ``v`` and ``at_ms`` added) to the tenant's chain."""
        body = canonical({"v": RECORD_VERSION, "at_ms": self._clock.now_ms(), "tenant": tenant,
                          **record})
        pending = store.append_audit(tenant, [body], commit)
        self._since[tenant] = self._since.get(tenant, 0) + 1
        return pending

    def checkpoint_due(self, tenant: str) -> bool:
        since = self._since.get(tenant, 0)
        if since >= self._every:
            return True
        now = self._clock.now_ms()
        last = self._last_ms.setdefault(tenant, now)
        return since > 0 and now - last >= self._interval_ms

    async def checkpoint(self, store: Store, tenant: str) -> JSONObject | None:
        """Sign the tenant's committed chain head and append it to the checkpoints file."""
        self._since[tenant] = 0
        self._last_ms[tenant] = at_ms = self._clock.now_ms()
        head = await store.audit_head(tenant)
        if head is None:
            return None
        line: JSONObject = {"tenant": tenant, "size": head.idx, "head": head.hash,
                            "at_ms": at_ms, "key_id": self.keys.key_id,
                            "signature": self.keys.sign(checkpoint_note(
                                tenant, head.idx, head.hash, at_ms))}
        self.checkpoints.parent.mkdir(parents=True, exist_ok=True)
        with self.checkpoints.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
        return line


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing ``verify`` found wrong: the tenant, the first bad record, what is wrong."""

    tenant: str
    idx: int | None
    message: str

    def __str__(self) -> str:
        if self.idx is None:
            return f"tenant {self.tenant!r}: {self.message}"
        return f"tenant {self.tenant!r} record {self.idx} {self.message}"


def _verify_chain(tenant: str, rows: list[AuditRow]) -> tuple[Problem | None, dict[int, str]]:
    """The first broken link of a chain, and the hash of every record up to it."""
    hashes: dict[int, str] = {}
    previous = AUDIT_GENESIS
    for expected, row in enumerate(rows, start=1):
        if row.idx != expected:
            return Problem(tenant, expected, f"is missing (the next record is {row.idx}): "
                                             "a record was deleted"), hashes
        if chain_hash(previous, row.body) != row.hash:
            return Problem(tenant, row.idx, "does not match its hash or does not follow the "
                                            "record before it: it was edited, inserted or "
                                            "moved"), hashes
        hashes[row.idx] = previous = row.hash
    return None, hashes


def read_checkpoints(path: Path, public: Ed25519PublicKey,
                     ) -> tuple[list[JSONObject], list[Problem]]:
    """Every checkpoint in the file whose signature holds; a bad one is a problem."""
    found: list[JSONObject] = []
    problems: list[Problem] = []
    if not path.exists():
        return found, problems
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            note = checkpoint_note(str(line["tenant"]), int(line["size"]), str(line["head"]),
                                   int(line["at_ms"]))
            public.verify(bytes.fromhex(line["signature"]), note.encode())
        except (ValueError, KeyError, TypeError, InvalidSignature):
            problems.append(Problem("?", None, f"{path} line {number} is not a validly signed "
                                               "checkpoint (forged, edited or damaged)"))
            continue
        found.append(line)
    return found, problems


async def verify(store: Store, public: Ed25519PublicKey, checkpoints: Path,
                 ) -> tuple[int, list[Problem]]:
    """Check every tenant's chain against itself and against the signed checkpoints.

    Returns the number of records checked and the problems (at most one per tenant: the
    first bad record; later ones cannot be trusted to say anything more).
    """
    marks, problems = read_checkpoints(checkpoints, public)
    tenants = sorted(set(await store.audit_tenants())
                     | {str(mark["tenant"]) for mark in marks})
    checked = 0
    for tenant in tenants:
        rows = await store.load_audit(tenant)
        checked += len(rows)
        problem, hashes = _verify_chain(tenant, rows)
        last = rows[-1].idx if rows else 0
        for mark in (m for m in marks if m["tenant"] == tenant):
            size = int(mark["size"])
            if size > last and problem is None:
                problem = Problem(tenant, last + 1, f"and every record after it are missing: a "
                                  f"checkpoint signed at {mark['at_ms']} covers {size} records, "
                                  f"the chain ends at {last} (the tail was cut off)")
            elif size in hashes and hashes[size] != mark["head"] and problem is None:
                problem = Problem(tenant, size, "does not match the signed checkpoint of the "
                                  "chain at this size: the chain was rewritten up to here")
        if problem is not None:
            problems.append(problem)
    return checked, problems

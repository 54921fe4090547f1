"""The audit trail: hash-chained records per tenant, and signed checkpoints beside them.

Each record is canonical JSON (``_canonical``); the store chains it to the previous record
of its tenant (``hash = sha256(previous hash || body)``, see ``Store.append_audit``). A chain
alone shows an edit, a deletion, an insertion or a reordering, but not a cut-off tail or a
chain rewritten from some point on; so every ``checkpoint_every`` records (or
``checkpoint_interval_seconds``) the head of the chain is signed with an ed25519 key and
appended to a separate file (put it on a mount the database's writer cannot rewrite). Every
checkpoint must then match the chain: the record at its size must carry its hash. Records
past a tenant's last checkpoint are reported as unanchored: nothing vouches for them yet.
The verifier's public key is best pinned in the config (``checkpoint_public_key``): a key
read from beside the private one is only as safe as that directory.

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
from tether.telemetry import current_trace_ids
from tether.types import JSONObject

RECORD_VERSION = 1
_NOTE = "tether-audit/v1"


def _write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create a file (by default only its owner can read it), refusing to overwrite one that
    exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


_KEY_PREFIX = "ed25519:"


def public_key_text(public: Ed25519PublicKey) -> str:
    """A public key as ``governance.checkpoint_public_key`` takes it: ``ed25519:<hex>``."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _KEY_PREFIX + raw.hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key of ``public_key_text``; a ``ConfigError`` that says what is expected."""
    raw = text.strip().removeprefix(_KEY_PREFIX)
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
    except ValueError:
        raise ConfigError(f"governance.checkpoint_public_key must be ed25519: and 64 hex "
                          f"digits, as `tether audit key` prints it; not {text!r}") from None


def _same(a: Ed25519PublicKey, b: Ed25519PublicKey) -> bool:
    return public_key_text(a) == public_key_text(b)


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
    def load_or_create(cls, directory: Path, *, pinned: Ed25519PublicKey | None = None,
                       ) -> AuditKeys:
        """The keys in ``directory``, made on first use. A signing key is made only where
        nothing says one existed: never over a ``checkpoint.pub`` (that would silently
        replace what verifiers trust) nor against a ``pinned`` public key; and the key must
        match both. Each refusal says how to recover."""
        directory.mkdir(parents=True, exist_ok=True)
        secret_path, key_path = directory / "hmac.key", directory / "checkpoint.key"
        public_path = directory / "checkpoint.pub"
        if not secret_path.exists():
            _write_new(secret_path, secrets.token_hex(32).encode())
        if not key_path.exists():
            if pinned is not None or public_path.exists():
                trusted = ("governance.checkpoint_public_key pins the key" if pinned is not None
                           else f"{public_path} holds the public key of the one")
                raise ConfigError(
                    f"{key_path} is missing, but {trusted} checkpoints are signed with: restore "
                    "the key file. A new key would sign checkpoints no verifier accepts; to "
                    f"start over with one on purpose, move {public_path.name} aside and unset "
                    "governance.checkpoint_public_key (earlier checkpoints then verify only "
                    "against the old public key)")
            fresh = Ed25519PrivateKey.generate()
            _write_new(key_path, fresh.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        try:
            secret = bytes.fromhex(secret_path.read_text().strip())
            signing = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(f"{directory}: an audit key file is damaged ({exc})") from None
        if not isinstance(signing, Ed25519PrivateKey):
            raise ConfigError(f"{key_path}: not an ed25519 private key")
        public = signing.public_key()
        if pinned is not None and not _same(public, pinned):
            raise ConfigError(f"{key_path} does not match governance.checkpoint_public_key: "
                              "its checkpoints would not verify; restore the pinned key's "
                              "file, or pin this one (`tether audit key`)")
        if not public_path.exists():
            _write_new(public_path, public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                0o644)
        elif not _same(public, load_public_key(public_path)):
            raise ConfigError(f"{public_path} is not the public key of {key_path}: verifiers "
                              "would reject its checkpoints; restore the matching pair")
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
        """Append one record (with ``v`` and ``at_ms`` added, and the ``trace_id`` and
        ``span_id`` of the current OpenTelemetry span when there is one) to the tenant's
        chain."""
        body = canonical({"v": RECORD_VERSION, "at_ms": self._clock.now_ms(), "tenant": tenant,
                          **current_trace_ids(), **record})
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
        """Sign the tenant's committed chain head and append it to the checkpoints file.

        When this log appended records since its last checkpoint, some may still be queued
        for a lazy commit; a ``checkpoint`` record committed with ``Commit.WAIT`` goes into
        the chain first (commits keep submission order), so the head signed is ours.
        """
        if self._since.get(tenant, 0) > 0:
            pending = self.append(store, tenant, {"type": "checkpoint",
                                                  "key_id": self.keys.key_id}, Commit.WAIT)
            if pending is not None:
                await pending
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

    async def checkpoint_pending(self, store: Store) -> int:
        """Sign a checkpoint of every chain this log extended since its last one (when a
        runtime closes: its tail is then anchored); returns how many were written."""
        written = 0
        for tenant in [t for t, since in self._since.items() if since > 0]:
            if await self.checkpoint(store, tenant) is not None:
                written += 1
        return written


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


@dataclass(frozen=True, slots=True)
class Unanchored:
    """Records of a tenant that no signed checkpoint covers (``first`` to ``last``): their
    chain holds, but nothing shows they were not rewritten or cut off, so they prove
    nothing until a checkpoint is signed over them."""

    tenant: str
    first: int
    last: int

    def __str__(self) -> str:
        if self.first == 1:
            return (f"tenant {self.tenant!r}: no signed checkpoint covers any of its "
                    f"{self.last} records")
        return (f"tenant {self.tenant!r} records {self.first}-{self.last} are not covered "
                "by a signed checkpoint")


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``audit_report`` found: records checked, problems, and unanchored tails."""

    records: int
    problems: list[Problem]
    unanchored: list[Unanchored]


async def verify(store: Store, public: Ed25519PublicKey, checkpoints: Path,
                 ) -> tuple[int, list[Problem]]:
    """The records checked and the problems of ``audit_report`` (unanchored tails aside)."""
    report = await audit_report(store, public, checkpoints)
    return report.records, report.problems


async def audit_report(store: Store, public: Ed25519PublicKey, checkpoints: Path,
                       ) -> AuditReport:
    """Check every tenant's chain against itself and against the signed checkpoints.

    Problems are at most one per tenant: the first bad record (later ones cannot be trusted
    to say anything more). A tenant without problems whose chain runs past its last
    checkpoint (or has none) is unanchored from there on: a chain rewritten from some point
    with fresh hashes, or cut short, looks whole without a checkpoint to hold it to.
    """
    marks, problems = read_checkpoints(checkpoints, public)
    tenants = sorted(set(await store.audit_tenants())
                     | {str(mark["tenant"]) for mark in marks})
    checked = 0
    unanchored: list[Unanchored] = []
    for tenant in tenants:
        rows = await store.load_audit(tenant)
        checked += len(rows)
        problem, hashes = _verify_chain(tenant, rows)
        last = rows[-1].idx if rows else 0
        covered = 0
        for mark in (m for m in marks if m["tenant"] == tenant):
            size = int(mark["size"])
            covered = max(covered, size)
            if size > last and problem is None:
                problem = Problem(tenant, last + 1, f"and every record after it are missing: a "
                                  f"checkpoint signed at {mark['at_ms']} covers {size} records, "
                                  f"the chain ends at {last} (the tail was cut off)")
            elif size in hashes and hashes[size] != mark["head"] and problem is None:
                problem = Problem(tenant, size, "does not match the signed checkpoint of the "
                                  "chain at this size: the chain was rewritten up to here")
        if problem is not None:
            problems.append(problem)
        elif last > covered:
            unanchored.append(Unanchored(tenant, covered + 1, last))
    return AuditReport(checked, problems, unanchored)

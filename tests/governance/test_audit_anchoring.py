"""``tether audit verify`` vouches only for what signed checkpoints cover, and only with the
key it was told to trust: unanchored records fail it, a pinned key is not swapped by a file,
and a missing signing key is never silently replaced."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gov_support import Env, on_store, rewrite

from tether.errors import ConfigError
from tether.governance import AuditKeys, Governance, load_governance_config, public_key_text
from tether.governance._audit import checkpoint_note
from tether.store import SQLiteStore


def append(project: Env, tenant: str, count: int) -> None:
    """Records written with no checkpoint after them, as a process killed mid-run leaves."""

    async def write(gov: Governance, store: SQLiteStore) -> None:
        for n in range(count):
            gov.audit.append(store, tenant, {"type": "note", "n": n})

    on_store(project, write)


def test_a_chain_rewritten_where_no_checkpoint_exists_is_not_called_intact(
        tmp_path: Path) -> None:
    project = Env(tmp_path)
    append(project, "acme", 4)
    rewrite(project, 1, '"note"', '"nothing to see"')
    code, out, err = project.cli("audit", "verify")
    assert code == 1
    assert "intact" not in out
    assert "links hold: 4 records, 4 of them unanchored" in out
    assert "unanchored: tenant 'acme': no signed checkpoint covers any of its 4 records" in err
    assert "--allow-unanchored" in err
    code, out, _ = project.cli("audit", "verify", "--allow-unanchored")
    assert code == 0
    code, out, _ = project.cli("audit", "verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert (report["intact"], report["anchored"]) == (True, False)
    assert report["unanchored"] == [{"tenant": "acme", "first": 1, "last": 4}]


def test_records_past_the_last_checkpoint_and_tenants_without_one_are_unanchored(
        tmp_path: Path) -> None:
    project = Env(tmp_path)
    append(project, "acme", 3)
    code, out, _ = project.cli("audit", "checkpoint")
    assert "signed 1 checkpoint" in out
    code, out, err = project.cli("audit", "verify")
    assert code == 0, err
    assert "intact: 3 records" in out
    append(project, "acme", 2)
    append(project, "globex", 1)
    code, _, err = project.cli("audit", "verify")
    assert code == 1
    assert "unanchored: tenant 'acme' records 4-5 are not covered by a signed checkpoint" in err
    assert "unanchored: tenant 'globex': no signed checkpoint covers any of its 1 records" \
        in err
    project.cli("audit", "checkpoint")
    code, out, err = project.cli("audit", "verify")
    assert code == 0, err
    assert "intact: 6 records" in out


def forge(project: Env) -> None:
    """What someone who can write the audit directory and the database can do: rewrite the
    chain, make a key of their own, and sign checkpoints of the new chain with it."""
    rewrite(project, 1, '"note"', '"nothing to see"')
    mine = Ed25519PrivateKey.generate()
    (project.root / "audit" / "checkpoint.pub").write_bytes(mine.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with closing(sqlite3.connect(project.db)) as conn:
        size, head = conn.execute("SELECT idx, hash FROM audit WHERE tenant = 'acme' "
                                  "ORDER BY idx DESC LIMIT 1").fetchone()
    line = {"tenant": "acme", "size": size, "head": head, "at_ms": 1, "key_id": "x",
            "signature": mine.sign(checkpoint_note("acme", size, head, 1).encode()).hex()}
    (project.root / "audit" / "checkpoints.jsonl").write_text(json.dumps(line) + "\n")


def test_a_pinned_key_catches_checkpoints_signed_with_a_swapped_key(tmp_path: Path) -> None:
    project = Env(tmp_path)
    append(project, "acme", 3)
    code, out, _ = project.cli("audit", "key")
    assert code == 0
    pin = out.split("  #")[0]
    assert pin.startswith('checkpoint_public_key = "ed25519:')
    code, out, _ = project.cli("audit", "key", "--json")
    pinned = json.loads(out)["checkpoint_public_key"]
    assert pin == f'checkpoint_public_key = "{pinned}"'
    project.cli("audit", "checkpoint")
    forge(project)
    code, _, err = project.cli("audit", "verify")
    assert code == 0  # trusting the file beside the key, the forgery holds up
    assert "pin the key" in err
    toml = project.root / "tether.toml"
    toml.write_text(toml.read_text() + pin + "\n")
    code, out, err = project.cli("audit", "verify")
    assert code == 1
    assert "not a validly signed checkpoint" in err
    assert "pin the key" not in err
    assert json.loads(project.cli("audit", "verify", "--json")[1])["key"] == "pinned"


def test_a_missing_signing_key_is_never_replaced_silently(tmp_path: Path) -> None:
    audit_dir = tmp_path / "audit"
    first = AuditKeys.load_or_create(audit_dir)
    public = (audit_dir / "checkpoint.pub").read_bytes()
    (audit_dir / "checkpoint.key").unlink()
    with pytest.raises(ConfigError, match=r"checkpoint.key is missing, but .*checkpoint.pub"):
        AuditKeys.load_or_create(audit_dir)
    assert (audit_dir / "checkpoint.pub").read_bytes() == public
    assert not (audit_dir / "checkpoint.key").exists()
    (audit_dir / "checkpoint.pub").unlink()
    with pytest.raises(ConfigError, match="pins the key"):
        AuditKeys.load_or_create(audit_dir, pinned=first.public)
    assert not (audit_dir / "checkpoint.key").exists()
    AuditKeys.load_or_create(audit_dir)  # nothing says a key existed: a new one is made
    with pytest.raises(ConfigError, match=r"does not match governance\.checkpoint_public_key"):
        AuditKeys.load_or_create(audit_dir, pinned=first.public)


def test_a_public_key_file_that_does_not_match_the_signing_key_is_refused(
        tmp_path: Path) -> None:
    audit_dir = tmp_path / "audit"
    AuditKeys.load_or_create(audit_dir)
    other = Ed25519PrivateKey.generate().public_key()
    (audit_dir / "checkpoint.pub").write_bytes(other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="is not the public key of"):
        AuditKeys.load_or_create(audit_dir)


@pytest.mark.parametrize(("line", "message"), [
    ('checkpoint_public_key = "ed25519:abcd"', "64 hex digits"),
    ('allow_self_approval = "yes"', "must be true or false"),
])
def test_bad_governance_settings_are_refused(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "tether.toml"
    path.write_text(f'[governance]\npolicy_dir = "policies"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_governance_config(path)


def test_a_pinned_key_round_trips_through_the_config(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "tether.toml"
    path.write_text(f'[governance]\npolicy_dir = "policies"\nallow_self_approval = true\n'
                    f'checkpoint_public_key = "{public_key_text(key)}"\n')
    config = load_governance_config(path)
    assert config is not None
    assert config.allow_self_approval is True
    assert config.checkpoint_public_key == public_key_text(key)


def test_verify_without_any_key_to_trust_says_how_to_get_one(tmp_path: Path) -> None:
    project = Env(tmp_path)
    code, _, err = project.cli("audit", "verify")
    assert code == 2
    assert "checkpoint.pub does not exist" in err
    assert "checkpoint_public_key" in err
    assert not (project.root / "audit" / "checkpoint.key").exists()  # verifying makes no keys

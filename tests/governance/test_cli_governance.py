"""The governance commands: policy check and test, approvals across a process restart, and
``tether audit verify`` catching each kind of tampering done with the ``sqlite3`` tool."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from gov_support import Env, on_store, rewrite

from peers import executable
from tether.governance import Governance
from tether.store import SQLiteStore


@pytest.fixture
def project(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_policy_check_validates_and_names_what_is_wrong(project: Env) -> None:
    code, out, _ = project.cli("policy", "check")
    assert code == 0
    assert "ok: 10 policies (1 needing approval)" in out
    (project.root / "policies" / "bad.cedar").write_text('permit (principal, action, resource);')
    code, _, err = project.cli("policy", "check")
    assert code == 1
    assert "bad.cedar" in err
    assert "@id" in err


def test_policy_test_runs_table_driven_cases(project: Env) -> None:
    cases = project.root / "cases.toml"
    cases.write_text('''
[[case]]
name = "support refunds a little"
principal = "alice"
agent = "support"
action = "call_tool"
resource = "refund"
args = { order_id = "A-1", amount = 20 }
expect = "allow"

[[case]]
name = "a big refund needs approval"
principal = "alice"
agent = "support"
action = "call_tool"
resource = "refund"
args = { order_id = "A-1", amount = 900 }
expect = "approval"

[[case]]
name = "a forbid that errors denies (numeric order id)"
principal = "alice"
action = "call_tool"
resource = "refund"
args = { order_id = 12345, amount = 1 }
expect = "deny"

[[case]]
name = "no confused deputy"
principal = "root"
agent = "support"
action = "call_tool"
resource = "delete_account"
expect = "deny"

[[case]]
name = "supervisors approve"
principal = "bob"
action = "approve"
resource = "refund"
expect = "allow"
''')
    code, out, _ = project.cli("policy", "test", str(cases))
    assert code == 0, out
    assert "5 of 5 cases as expected" in out
    assert "pass  a big refund needs approval: approval by refunds-over-500-need-approval" in out
    cases.write_text(cases.read_text().replace('expect = "deny"', 'expect = "allow"', 1))
    code, out, _ = project.cli("policy", "test", str(cases))
    assert code == 1
    assert "FAIL  a forbid that errors denies" in out
    assert "4 of 5" in out


def test_an_approval_given_after_the_runtime_exited_resumes_the_run(project: Env) -> None:
    started = project.process("run", "gov_agents:support", "--input",
                              '{"question": "refund A-1"}', "--run-id", "r1")
    assert started.returncode == 3, started.stderr  # parked, waiting for a person
    assert not project.ledger.exists()
    code, out, _ = project.cli("approvals", "ls")
    assert code == 0
    assert 'r1:5  pending  refund({"amount": 900, "order_id": "A-1"})' in out
    assert "the model said: The order was paid 900; refunding all of it." in out
    code, _, err = project.cli("approvals", "approve", "r1:5", "--reason", "ok")
    assert code == 2
    assert "policy.denied" in err
    code, out, _ = project.cli("approvals", "approve", "r1:5", "--reason", "paid twice",
                               principal="bob")
    assert code == 0
    assert "approved by bob" in out
    worker = project.process("worker", "--once")
    assert worker.returncode == 0, worker.stderr
    code, out, _ = project.cli("runs", "show", "r1", "--json")
    assert json.loads(out)["run"]["result"] == "Refund done."
    assert [json.loads(line)["amount"] for line in project.ledger.read_text().splitlines()] == [900]
    code, out, _ = project.cli("approvals", "ls", "--status", "all", "--json")
    (approval,) = json.loads(out)
    assert (approval["status"], approval["decided_by"], approval["reason"]) == (
        "approved", "bob", "paid twice")
    assert approval["decided_at_ms"] >= approval["requested_at_ms"]
    code, out, _ = project.cli("audit", "verify")
    assert code == 0
    assert "intact" in out
    code, out, _ = project.cli("audit", "export", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    types = [r["record"]["type"] for r in records]
    assert "approval.requested" in types
    assert "approval.decided" in types
    assert all("A-1" not in line for line in out.splitlines())  # digests, not arguments
    code, out, _ = project.cli("audit", "tail", "-n", "3")
    assert code == 0
    assert len(out.splitlines()) == 3


# -- tampering --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """A project whose audit trail holds one completed governed run and a checkpoint."""
    project = Env(tmp_path_factory.mktemp("audited"))
    # Without the approval rule the big refund goes through and the run completes.
    tools = project.root / "policies" / "tools.cedar"
    text = tools.read_text()
    start = text.index('@id("refunds-over-500-need-approval")')
    tools.write_text(text[:start] + text[text.index('@id("no-refunds-for-blocked-orders")'):])
    ran = project.process("run", "gov_agents:support", "--input", '{"question": "?"}')
    assert ran.returncode == 0, ran.stderr
    return project


def _checkpoint(project: Env) -> None:
    async def sign(gov: Governance, store: SQLiteStore) -> None:
        assert await gov.checkpoint_all(store) == 1

    on_store(project, sign)


@pytest.fixture
def tampered(audited: Env, tmp_path: Path) -> Env:
    """A copy of the audited project (with a checkpoint of its whole chain) to damage."""
    if not (audited.root / "audit" / "checkpoints.jsonl").exists():
        _checkpoint(audited)
    copy = tmp_path / "copy"
    shutil.copytree(audited.root, copy)
    project = Env.__new__(Env)
    project.root, project.db, project.ledger = copy, copy / "tether.db", copy / "ledger.jsonl"
    (copy / "tether.toml").write_text((copy / "tether.toml").read_text().replace(
        str(audited.db), str(project.db)))
    return project


def sqlite(project: Env, sql: str) -> None:
    subprocess.run([executable("sqlite3"), str(project.db), sql], check=True, timeout=30)


def records(project: Env) -> int:
    with closing(sqlite3.connect(project.db)) as conn:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE audit SET body = replace(body, '\"allow\"', '\"deny\"') WHERE idx = 4",
     "record 4 does not match its hash"),
    ("DELETE FROM audit WHERE idx = 3", "record 3 is missing"),
    ("UPDATE audit SET idx = idx + 100 WHERE idx >= 3; UPDATE audit SET idx = idx - 99 "
     "WHERE idx >= 103; INSERT INTO audit VALUES ('acme', 3, '{\"forged\":true}', "
     "'" + "ab" * 32 + "')", "record 3 does not match its hash"),
    ("UPDATE audit SET idx = -2 WHERE idx = 2; UPDATE audit SET idx = 2 WHERE idx = 3; "
     "UPDATE audit SET idx = 3 WHERE idx = -2", "record 2 does not match its hash"),
    ("DELETE FROM audit WHERE idx > 5", "record 6 and every record after it are missing"),
])
def test_audit_verify_names_the_first_bad_record(tampered: Env, sql: str, expected: str) -> None:
    assert records(tampered) > 6
    code, out, _ = tampered.cli("audit", "verify")
    assert code == 0, out
    sqlite(tampered, sql)
    code, _, err = tampered.cli("audit", "verify")
    assert code == 1
    assert f"tenant 'acme' {expected}" in err, err


def test_a_chain_rewritten_with_fresh_hashes_fails_its_checkpoint(tampered: Env) -> None:
    rewrite(tampered, 2, '"allow"', '"deny"')
    code, _, err = tampered.cli("audit", "verify")
    assert code == 1
    assert "does not match the signed checkpoint" in err, err


def test_a_forged_checkpoint_is_reported(tampered: Env) -> None:
    path = tampered.root / "audit" / "checkpoints.jsonl"
    line = json.loads(path.read_text().splitlines()[-1])
    line["size"] += 1
    with path.open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    code, _, err = tampered.cli("audit", "verify")
    assert code == 1
    assert "not a validly signed checkpoint" in err

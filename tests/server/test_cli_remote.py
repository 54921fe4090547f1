"""``--server URL``: the CLI's read and control commands through a real ``tether serve``
print what the same command prints against the store, and exit with the same code."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.client import Client

from .process import ServerProcess, start_server, tether

POLICIES = Path(__file__).resolve().parents[1] / "governance" / "policies"


@dataclass
class Governed:
    server: ServerProcess
    config: Path
    keys: dict[str, str]
    """Keys of alice (support), bob (supervisor) and carol (no role), all of tenant acme."""

    @property
    def db(self) -> str:
        return f"sqlite:///{self.server.directory / 'tether.db'}"

    def local(self, *args: str, principal: str = "alice") -> subprocess.CompletedProcess[str]:
        """The command on the server's store, as ``principal``."""
        return tether("--db", self.db, *args, cwd=self.server.directory, config=self.config,
                      env={"TETHER_PRINCIPAL": principal})

    def remote(self, *args: str, principal: str = "alice") -> subprocess.CompletedProcess[str]:
        """The command through the server, with ``principal``'s key in TETHER_API_KEY (and
        no config and no database: the server is all it needs)."""
        return tether(*args, "--server", self.server.url, cwd=self.server.directory,
                      env={"TETHER_API_KEY": self.keys[principal]})

    def both(self, *args: str, principal: str = "alice") -> tuple[int, str, str]:
        """The outcome of the command both ways, asserted to be the same."""
        here, there = self.local(*args, principal=principal), self.remote(*args,
                                                                        principal=principal)
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode, here.stdout, here.stderr), args
        return here.returncode, here.stdout, here.stderr


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governed]:
    directory = tmp_path_factory.mktemp("remote")
    shutil.copytree(POLICIES, directory / "policies")
    config = directory / "tether.toml"
    config.write_text('[governance]\npolicy_dir = "policies"\naudit_dir = "audit"\n')
    process = start_server(directory, config=config)
    keys = {"alice": process.key}
    for name in ("bob", "carol"):
        issued = tether("keys", "issue", name, "--tenant", "acme", cwd=directory, config=config)
        assert issued.returncode == 0, issued.stderr
        keys[name] = issued.stdout.strip()
    yield Governed(process, config, keys)
    assert process.stop() == 0, process.stderr()


def _park(server: ServerProcess, run_id: str) -> str:
    """Start a support run that parks on a held refund; returns its approval id."""
    with Client(server.url, api_key=server.key) as client:
        client.start("support", {"question": "refund A-1"}, run_id=run_id)
        for event in client.events(run_id):
            if event.event == "run" and event.data["run"]["status"] == "waiting":
                break
        held = [a for a in client.approvals() if a["run_id"] == run_id]
    assert len(held) == 1
    return str(held[0]["approval_id"])


def test_reads_and_refusals_match_the_local_commands(governed: Governed) -> None:
    first = _park(governed.server, "remote-1")
    _park(governed.server, "remote-2")

    code, out, err = governed.both("runs", "ls")
    assert code == 0
    assert "remote-1" in out
    assert "remote-2" in out
    assert err == ""
    code, out, err = governed.both("runs", "ls", "--json", principal="carol")
    assert (code, json.loads(out)) == (0, [])
    assert err == "2 runs not shown: carol may not read_run them\n"
    code, out, _ = governed.both("runs", "show", "remote-1")
    assert code == 0
    assert "status     waiting" in out
    code, _, err = governed.both("runs", "show", "nope")
    assert code == 2
    assert err.startswith("error: run.not_found: no run with id 'nope'")
    code, out, _ = governed.both("approvals", "ls")
    assert code == 0
    assert first in out
    assert "the model said: I will refund it" in out

    # alice may neither approve, nor signal or cancel: the same refusal both ways.
    code, _, err = governed.both("approvals", "approve", first, "--reason", "mine")
    assert code == 2
    assert err.startswith("error: policy.denied: ")
    for args in (("signal", "remote-1", "go"), ("runs", "cancel", "remote-1")):
        code, _, err = governed.both(*args)
        assert code == 2, args
        assert err.startswith("error: policy.denied: "), args
    # carol's kill switch cancels nothing: the policies refuse both runs.
    code, out, _ = governed.both("runs", "cancel", "--all", principal="carol")
    assert (code, out) == (0, "cancelled 0 run(s); the policies refused 2\n")
    # A run that does not need attention cannot be resolved, whoever asks.
    code, _, err = governed.both("resolve", "remote-1", "--retry", principal="bob")
    assert code == 2
    assert "needs_attention" in err


def test_a_supervisor_decides_and_cancels_through_the_server(governed: Governed) -> None:
    approval = _park(governed.server, "remote-3")
    _park(governed.server, "remote-4")
    approved = governed.remote("approvals", "approve", approval, "--reason", "fine",
                               principal="bob")
    assert (approved.returncode, approved.stdout) == (
        0, f"approval {approval} approved by bob; run remote-3 will go on\n")
    with Client(governed.server.url, api_key=governed.server.key) as client:
        assert [e.event for e in client.events("remote-3")][-1] == "end"
        assert client.get("remote-3")["status"] == "completed"
    signalled = governed.remote("signal", "remote-4", "nudge", "--data", '{"n": 1}',
                                principal="bob")
    assert (signalled.returncode, signalled.stdout) == (
        0, "signal 'nudge' delivered to run remote-4 (waiting)\n")
    cancelled = governed.remote("runs", "cancel", "--all", "--agent", "support",
                                principal="bob")
    assert cancelled.returncode == 0
    assert cancelled.stdout.startswith("cancelled ")
    assert "refused" not in cancelled.stdout
    shown = governed.remote("runs", "show", "remote-4", principal="bob")
    assert "status     cancelled" in shown.stdout
    # Every change above is on the tenant's audit trail, decided by the same check.
    records = governed.local("audit", "export", "--tenant", "acme").stdout.splitlines()
    decisions = [json.loads(line)["record"] for line in records]
    assert {(d["principal"], d["name"], d["decision"]["effect"]) for d in decisions
            if d.get("type") == "decision" and d.get("kind") == "run"} >= {
        ("alice", "signal_run", "deny"), ("bob", "signal_run", "allow"),
        ("carol", "cancel_run", "deny"), ("bob", "cancel_run", "allow")}


def test_audit_verify_matches_the_local_command(governed: Governed) -> None:
    _park(governed.server, "remote-5")
    code, out, _ = governed.both("audit", "verify", "--allow-unanchored")
    assert code == 0
    assert " records" in out
    code, out, _ = governed.both("audit", "verify", "--json", "--allow-unanchored")
    assert json.loads(out)["intact"] is True


def test_plain_server_commands_match_the_local_ones(server: ServerProcess) -> None:
    db = f"sqlite:///{server.directory / 'tether.db'}"
    with Client(server.url, api_key=server.key) as client:
        client.start("greeter", {"name": "Ada"}, run_id="plain-1")
        client.start("waiter", run_id="plain-2")
        client.start("waiter", run_id="plain-3")
        assert [e.event for e in client.events("plain-1")][-1] == "end"

    def both(*args: str) -> tuple[int, str, str]:
        here = tether("--db", db, *args, cwd=server.directory)
        there = tether(*args, cwd=server.directory,
                       env={"TETHER_SERVER": server.url, "TETHER_API_KEY": server.key})
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode, here.stdout, here.stderr), args
        return here.returncode, here.stdout, here.stderr

    assert both("runs", "ls", "--agent", "waiter", "--status", "waiting")[1].count("plain-") == 2
    assert both("runs", "ls", "--limit", "1")[0] == 0
    assert both("runs", "show", "plain-1")[0] == 0
    # Control commands change things, so each goes once, remotely, and prints the same line.
    via = {"TETHER_SERVER": server.url, "TETHER_API_KEY": server.key}
    signalled = tether("signal", "plain-2", "go", "--data", "[1]", cwd=server.directory, env=via)
    assert signalled.stdout == "signal 'go' delivered to run plain-2 (pending)\n"
    cancelled = tether("runs", "cancel", "plain-3", cwd=server.directory, env=via)
    assert (cancelled.returncode, cancelled.stdout) == (0, "run plain-3 is cancelled\n")
    again = both("runs", "cancel", "plain-3")
    assert again == (0, "run plain-3 is cancelled\n", "")


def test_bad_server_use_is_one_clear_line(server: ServerProcess, tmp_path: Path) -> None:
    def remote(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return tether(*args, cwd=tmp_path, env=env)

    keyless = remote("runs", "ls", "--server", server.url, env={})
    assert keyless.returncode == 2
    assert keyless.stderr.startswith("error: auth.unauthenticated: ")
    assert "$TETHER_API_KEY is not set" in keyless.stderr
    named = remote("runs", "ls", "--server", server.url, "--api-key-env", "OPS_KEY",
                   env={"OPS_KEY": server.key})
    assert named.returncode == 0, named.stderr
    wrong = remote("runs", "ls", "--server", server.url, env={"TETHER_API_KEY": "tk_no_no"})
    assert "the key comes from $TETHER_API_KEY" in wrong.stderr
    mixed = remote("runs", "ls", "--server", server.url, "--tenant", "globex",
                   env={"TETHER_API_KEY": server.key})
    assert mixed.returncode == 2
    assert "the API key decides who acts" in mixed.stderr
    not_url = remote("runs", "ls", "--server", "localhost:8000", env={})
    assert (not_url.returncode, not_url.stderr.count("\n")) == (2, 1)
    assert "must be a URL like http://" in not_url.stderr
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = remote("runs", "ls", "--server", f"http://127.0.0.1:{port}", env={})
    assert down.returncode == 2
    assert down.stderr.startswith(f"error: usage: cannot reach the server at "
                                  f"http://127.0.0.1:{port}")
    assert "Traceback" not in down.stderr

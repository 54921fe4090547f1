"""Who the command line acts as (``--tenant``, ``--principal``) and what the policies let it
do to runs; the checkpoint a closing runtime signs and ``tether audit checkpoint``; spans
exported over OTLP/HTTP to a collector on loopback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest
from gov_support import Env
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from peers import executable
from tether.governance import Governance
from tether.store import SQLiteStore

REFUND_900 = '{"question": "refund A-1"}'


@pytest.fixture(scope="module")
def parked(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """A governed project with run r1 of alice, parked on an approval."""
    project = Env(tmp_path_factory.mktemp("identity"))
    code, _, err = project.cli("run", "gov_agents:support", "--input", REFUND_900,
                               "--run-id", "r1")
    assert code == 3, err
    return project


def audit_bodies(project: Env) -> list[dict[str, object]]:
    with closing(sqlite3.connect(project.db)) as conn:
        rows = conn.execute("SELECT body FROM audit ORDER BY idx").fetchall()
    return [json.loads(body) for (body,) in rows]


def test_a_run_started_for_an_unknown_principal_is_refused(parked: Env) -> None:
    code, _, err = parked.cli("run", "gov_agents:support", "--input", REFUND_900,
                              "--principal", "mallory")
    assert code == 2
    assert "policy.denied" in err
    assert "unknown principal 'mallory'" in err


def test_runs_show_needs_read_run_and_names_the_policy_that_allowed_nothing(
        parked: Env) -> None:
    code, out, _ = parked.cli("runs", "show", "r1", "--json")
    assert code == 0
    assert json.loads(out)["run"]["principal"] == "alice"
    code, out, err = parked.cli("runs", "show", "r1", "--principal", "carol")
    assert code == 2
    assert out == ""
    assert "policy.denied: read_run on Run::r1 denied for carol" in err
    assert "default deny" in err
    code, _, err = parked.cli("runs", "show", "r1", "--principal", "bob")
    assert code == 0, err
    code, _, err = parked.cli("runs", "show", "r1", "--tenant", "globex", "--principal", "bob")
    assert code == 2
    assert "run.not_found" in err  # another tenant's run does not exist for this caller


def test_runs_ls_shows_only_what_the_principal_may_read(parked: Env) -> None:
    code, out, _ = parked.cli("runs", "ls", "--json")
    assert [run["run_id"] for run in json.loads(out)] == ["r1"]
    code, out, err = parked.cli("runs", "ls", "--json", "--principal", "carol")
    assert code == 0
    assert json.loads(out) == []
    assert "1 run not shown: carol may not read_run them" in err
    code, out, _ = parked.cli("runs", "ls", "--json", "--tenant", "globex")
    assert json.loads(out) == []


def test_cancel_needs_cancel_run_and_every_attempt_is_audited(tmp_path: Path) -> None:
    project = Env(tmp_path)
    code, _, err = project.cli("run", "gov_agents:support", "--input", REFUND_900,
                               "--run-id", "c1")
    assert code == 3, err
    code, _, err = project.cli("runs", "cancel", "c1")
    assert code == 2
    assert "policy.denied: cancel_run on Run::c1 denied for alice" in err
    code, out, err = project.cli("signal", "c1", "go", "--principal", "alice")
    assert code == 2
    assert "signal_run" in err
    code, out, err = project.cli("runs", "cancel", "c1", "--principal", "bob",
                                 "--reason", "duplicate")
    assert code == 0, err
    assert "run c1 is cancelled" in out
    code, out, _ = project.cli("runs", "show", "c1", "--json", "--principal", "bob")
    assert json.loads(out)["run"]["error"]["by"] == "bob"
    decisions = [(b["principal"], b["name"], b["decision"]["effect"],  # type: ignore[index]
                  b["decision"]["policies"])  # type: ignore[index]
                 for b in audit_bodies(project) if b.get("kind") == "run"]
    assert decisions == [("alice", "cancel_run", "deny", []),
                         ("alice", "signal_run", "deny", []),
                         ("bob", "cancel_run", "allow", ["supervisors-manage-runs"])]
    code, out, _ = project.cli("audit", "verify")
    assert code == 0, out


# -- checkpoints ------------------------------------------------------------------------------

def sqlite(project: Env, sql: str) -> None:
    subprocess.run([executable("sqlite3"), str(project.db), sql], check=True, timeout=30)


def test_a_tail_cut_off_after_a_clean_shutdown_is_caught(tmp_path: Path) -> None:
    project = Env(tmp_path)  # a checkpoint every 1,000 records: none during the run
    ran = project.process("run", "gov_agents:support", "--input", REFUND_900)
    assert ran.returncode == 3, ran.stderr
    lines = (project.root / "audit" / "checkpoints.jsonl").read_text().splitlines()
    (last,) = [json.loads(line) for line in lines]  # signed when the runtime closed
    bodies = audit_bodies(project)
    assert last["size"] == len(bodies)
    assert bodies[-1]["type"] == "checkpoint"
    sqlite(project, "DELETE FROM audit WHERE idx > 4")
    code, _, err = project.cli("audit", "verify")
    assert code == 1
    assert "tenant 'acme' record 5 and every record after it are missing" in err


def test_audit_checkpoint_anchors_a_tail_no_runtime_signed(tmp_path: Path) -> None:
    project = Env(tmp_path)

    async def written_without_a_checkpoint() -> None:  # as a process killed mid-run leaves it
        governance = Governance.from_config(project.root / "tether.toml")
        assert governance is not None
        store = SQLiteStore(project.db)
        await store.open()
        try:
            for n in range(6):
                governance.audit.append(store, "acme", {"type": "note", "n": n})
        finally:
            await store.aclose()

    anyio.run(written_without_a_checkpoint)
    code, out, _ = project.cli("audit", "checkpoint")
    assert code == 0
    assert "signed 1 checkpoint" in out
    assert len(audit_bodies(project)) == 6  # signing adds nothing to the chain
    sqlite(project, "DELETE FROM audit WHERE idx > 4")
    code, _, err = project.cli("audit", "verify")
    assert code == 1
    assert "record 5 and every record after it are missing" in err


# -- OTLP export ------------------------------------------------------------------------------

class Collector:
    """An OTLP/HTTP trace receiver on loopback that keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                 body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def span_names(self) -> list[str]:
        names: list[str] = []
        for _, _, body in self.requests:
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    names.extend(span.name for span in scope.spans)
        return names

    def service_names(self) -> set[str]:
        found: set[str] = set()
        for _, _, body in self.requests:
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            for resource in export.resource_spans:
                found.update(a.value.string_value for a in resource.resource.attributes
                             if a.key == "service.name")
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=10)


def test_spans_go_to_the_configured_collector_with_its_header(
        tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    project = Env(tmp_path)
    with (project.root / "tether.toml").open("a") as toml:
        toml.write(f'\n[telemetry]\nendpoint = "{collector.url}"\nservice_name = "support-bot"\n'
                   'headers = { "X-Collector-Token" = "COLLECTOR_TOKEN" }\n')
    monkeypatch.setenv("COLLECTOR_TOKEN", "t0ken")
    code, _, err = project.cli("run", "gov_agents:support", "--input", REFUND_900)
    assert code == 3, err
    # Closing the runtime exported what was batched.
    assert {path for path, _, _ in collector.requests} == {"/v1/traces"}
    assert all(headers.get("x-collector-token") == "t0ken"
               for _, headers, _ in collector.requests)
    assert collector.service_names() == {"support-bot"}
    assert sorted(collector.span_names()) == sorted([
        "invoke_agent support", "chat scripted", "execute_tool lookup_order",
        "chat scripted", "execute_tool refund"])


def test_a_header_whose_variable_is_unset_is_refused_naming_it(tmp_path: Path) -> None:
    project = Env(tmp_path)
    with (project.root / "tether.toml").open("a") as toml:
        toml.write('\n[telemetry]\nendpoint = "http://127.0.0.1:9"\n'
                   'headers = { "X-Token" = "TETHER_TEST_UNSET_TOKEN" }\n')
    code, _, err = project.cli("run", "gov_agents:support", "--input", REFUND_900)
    assert code == 2
    assert "TETHER_TEST_UNSET_TOKEN" in err

"""`tether runs ls|show|cancel`, `signal`, `resolve` and `worker --once`."""

from __future__ import annotations

import re
from pathlib import Path

import cli_agents
import pytest
from cli_support import (
    TetherCLI,
    assert_one_error_line,
    ledger_lines,
    make_cli,
    park_uncertain,
    snapshot,
)


@pytest.fixture
def tether_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TetherCLI:
    return make_cli(tmp_path, monkeypatch)


def status_of(tether_cli: TetherCLI, run_id: str) -> str:
    status: str = tether_cli("runs", "show", run_id, "--json").json()["run"]["status"]
    return status


# -- runs ls ---------------------------------------------------------------------------------


def test_runs_ls_on_an_empty_database_says_there_are_no_runs(tether_cli: TetherCLI) -> None:
    out = tether_cli("runs", "ls")
    assert out.code == 0, out
    assert out.stdout == "no runs\n"
    assert tether_cli("runs", "ls", "--status", "failed").stdout == "no runs with status failed\n"
    assert tether_cli("runs", "ls", "--json").json() == []


def test_runs_ls_lists_runs_newest_first_with_status_and_agent(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "first")
    tether_cli("run", "cli_agents:broken", "--run-id", "second")
    tether_cli("run", "cli_agents:approval", "--run-id", "third")
    out = tether_cli("runs", "ls")
    assert out.code == 0, out
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["run", "status", "agent", "created"]
    assert [row.split()[:3] for row in rows] == [
        ["third", "waiting", "approval"], ["second", "failed", "broken"],
        ["first", "completed", "chat"]]
    for row in rows:
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$", row), row


def test_runs_ls_status_shows_only_runs_in_that_status(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "ok")
    tether_cli("run", "cli_agents:broken", "--run-id", "bad")
    out = tether_cli("runs", "ls", "--status", "failed")
    assert [row.split()[0] for row in out.stdout.splitlines()[1:]] == ["bad"]
    listed = tether_cli("runs", "ls", "--status", "completed", "--json").json()
    assert [run["run_id"] for run in listed] == ["ok"]


def test_runs_ls_json_gives_every_field_of_each_run(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:echo", "--run-id", "e1", "--input", '{"text": "x"}')
    [run] = tether_cli("runs", "ls", "--json").json()
    assert run["run_id"] == "e1"
    assert run["status"] == "completed"
    assert run["input"] == {"text": "x"}
    assert run["result"] == {"text": "x", "run_id": "e1"}
    assert {"agent_version", "created_at_ms", "updated_at_ms", "tenant", "principal"} <= set(run)


def test_runs_ls_agent_and_limit_narrow_the_list(tether_cli: TetherCLI) -> None:
    for run_id in ("a", "b", "c"):
        tether_cli("run", "cli_agents:chat", "--run-id", run_id)
    tether_cli("run", "cli_agents:broken", "--run-id", "d")
    assert [r["run_id"] for r in tether_cli("runs", "ls", "--agent", "chat", "--json").json()
            ] == ["c", "b", "a"]
    assert len(tether_cli("runs", "ls", "--limit", "2", "--json").json()) == 2


# -- runs show -------------------------------------------------------------------------------


def test_runs_show_prints_the_header_and_every_journal_record(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "c1")
    out = tether_cli("runs", "show", "c1")
    assert out.code == 0, out
    header, records = out.stdout.split("\n\n")
    fields = dict(line.split(None, 1) for line in header.splitlines())
    assert fields["run"] == "c1"
    assert fields["agent"].startswith("chat (version src-")
    assert fields["agent"].endswith(", cli_agents:chat)")
    assert fields["status"] == "completed"
    assert fields["result"] == "the color is teal"
    assert fields["input"] == "{}"
    column_names, *lines = records.splitlines()
    assert column_names.split() == ["seq", "kind", "name", "state", "try", "duration", "detail"]
    pattern = re.compile(r"\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+) ms\s+(.*)")
    parsed = [pattern.fullmatch(line) for line in lines]
    assert all(parsed), lines
    rows = [m.groups()[:5] for m in parsed if m]
    assert rows == [("1", "llm", "scripted-chat", "ok", "1"), ("2", "tool", "lookup", "ok", "1"),
                    ("3", "llm", "scripted-chat", "ok", "1")]
    details = [m.group(7) for m in parsed if m]
    assert details[0] == "tokens 11/3  -> calls lookup"
    assert details[1] == "teal"
    assert details[2] == "tokens 20/5  -> the color is teal"


def test_runs_show_json_has_the_run_and_its_journal(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "c1")
    shown = tether_cli("runs", "show", "c1", "--json").json()
    assert set(shown) == {"run", "journal"}
    assert shown["run"]["run_id"] == "c1"
    assert shown["run"]["result"] == "the color is teal"
    journal = shown["journal"]
    assert [(r["seq"], r["kind"], r["name"], r["state"]) for r in journal] == [
        (1, "llm", "scripted-chat", "ok"), (2, "tool", "lookup", "ok"),
        (3, "llm", "scripted-chat", "ok")]
    assert journal[0]["detail"]["usage"]["input_tokens"] == 11
    assert journal[1]["value"] == "teal"
    assert journal[1]["detail"]["args"] == {"key": "color"}
    for record in journal:
        assert record["finished_at_ms"] >= record["started_at_ms"] > 0


def test_runs_show_of_a_failed_run_prints_its_error(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:broken", "--run-id", "b1")
    out = tether_cli("runs", "show", "b1")
    assert "status     failed" in out.stdout
    assert "error      agent.error: the widget is broken" in out.stdout
    assert "result " not in out.stdout


def test_runs_show_of_a_waiting_run_says_what_it_waits_for(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1", "--thread", "t9")
    out = tether_cli("runs", "show", "w1")
    assert "waiting    for approve" in out.stdout
    assert "thread     t9" in out.stdout
    wait_line = out.stdout.splitlines()[-1].split()
    assert wait_line[:4] == ["1", "wait", "approve", "started"]


def test_runs_show_of_an_uncertain_effect_shows_it_started_and_unfinished(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    lines = tether_cli("runs", "show", "p1").stdout.splitlines()
    assert lines[-1].split()[:6] == ["2", "tool", "charge", "started", "1", "-"]


# -- runs cancel -----------------------------------------------------------------------------


def test_runs_cancel_cancels_a_waiting_run(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    out = tether_cli("runs", "cancel", "w1", "--reason", "no longer needed")
    assert out.code == 0, out
    assert out.stdout == "run w1 is cancelled\n"
    run = tether_cli("runs", "show", "w1", "--json").json()["run"]
    assert run["status"] == "cancelled"
    assert run["error"]["message"] == "no longer needed"
    assert tether_cli("runs", "ls", "--status", "cancelled", "--json").json()[0]["run_id"] == "w1"


def test_runs_cancel_leaves_a_finished_run_as_it_was(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "c1")
    before = snapshot(tether_cli.db_path)
    out = tether_cli("runs", "cancel", "c1")
    assert out.code == 0, out
    assert out.stdout == "run c1 is completed\n"
    assert snapshot(tether_cli.db_path) == before


def test_a_cancelled_run_takes_no_more_signals(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    tether_cli("runs", "cancel", "w1")
    before = snapshot(tether_cli.db_path)
    out = tether_cli("signal", "w1", "approve")
    assert_one_error_line(out, "w1", "cancelled")
    assert snapshot(tether_cli.db_path) == before


# -- signal and worker -----------------------------------------------------------------------


def test_signal_with_data_wakes_the_run_and_a_worker_finishes_it(tether_cli: TetherCLI) -> None:
    assert tether_cli("run", "cli_agents:approval", "--run-id", "w1").code == 3
    out = tether_cli("signal", "w1", "approve", "--data", '{"by": "ada"}')
    assert out.code == 0, out
    assert out.stdout.startswith("signal 'approve' delivered to run w1 (")
    worker = tether_cli("worker", "--once")
    assert worker.code == 0, worker
    run = tether_cli("runs", "show", "w1", "--json").json()["run"]
    assert run["status"] == "completed"
    assert run["result"] == {"approved": {"by": "ada"}}


def test_signal_without_data_delivers_null(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    assert tether_cli("signal", "w1", "approve").code == 0
    tether_cli("worker", "--once")
    assert tether_cli("runs", "show", "w1", "--json").json()["run"]["result"] == {
        "approved": None}


def test_signal_data_may_be_any_json_value(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    assert tether_cli("signal", "w1", "approve", "--data", "[1, 2]").code == 0
    assert tether_cli("resume", "w1", "--json").json()["result"] == {"approved": [1, 2]}


def test_a_signal_sent_for_another_name_leaves_the_run_waiting(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    out = tether_cli("signal", "w1", "reject")
    assert out.code == 0, out
    assert "(waiting)" in out.stdout
    tether_cli("worker", "--once")
    assert status_of(tether_cli, "w1") == "waiting"


def test_worker_once_finishes_every_runnable_run_and_exits_0(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Woken by signals or left mid-call by a dead process: `worker --once` drives them all."""
    for run_id in ("w1", "w2"):
        tether_cli("run", "cli_agents:approval", "--run-id", run_id)
        tether_cli("signal", run_id, "approve", "--data", f'"{run_id}"')
    park_uncertain(tether_cli.db, "s1", monkeypatch, agent=cli_agents.pay_safely)
    out = tether_cli("worker", "--once")
    assert out.code == 0, out
    assert [status_of(tether_cli, r) for r in ("w1", "w2", "s1")] == ["completed"] * 3


def test_worker_once_exits_when_only_future_timers_remain(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:napper", "--run-id", "n1")
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    before = snapshot(tether_cli.db_path)
    out = tether_cli("worker", "--once")
    assert out.code == 0, out
    assert status_of(tether_cli, "n1") == "waiting"
    assert snapshot(tether_cli.db_path)["runs"] == before["runs"]


def test_worker_once_on_an_empty_database_exits_0(tether_cli: TetherCLI) -> None:
    assert tether_cli("worker", "--once").code == 0


def test_worker_follow_prints_the_events_of_the_runs_it_drives(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    tether_cli("signal", "w1", "approve")
    out = tether_cli("worker", "--once", "--follow")
    assert out.code == 0, out
    assert " signal.received " in out.stdout
    assert " run.completed " in out.stdout


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_retry_calls_the_effect_again_and_the_run_completes(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("CLI_AGENTS_LEDGER", str(ledger))
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    tether_cli("resume", "p1")
    out = tether_cli("resolve", "p1", "--retry")
    assert out.code == 0, out
    assert out.stdout == "run p1 is now pending; a worker will resume it\n"
    assert tether_cli("worker", "--once").code == 0
    run = tether_cli("runs", "show", "p1", "--json").json()["run"]
    assert run["status"] == "completed"
    assert run["result"] == {"receipt": {"charged_cents": 500, "key": "p1:2"}}
    assert ledger_lines(ledger) == ["quote 5", "charge p1:2 500"]
    assert "(resolved: retry)" in tether_cli("runs", "show", "p1").stdout


def test_resolve_skip_with_records_the_value_without_calling_the_effect(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("CLI_AGENTS_LEDGER", str(ledger))
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    tether_cli("resume", "p1")
    out = tether_cli("resolve", "p1", "--skip-with", '{"charged_cents": 500, "key": "manual"}')
    assert out.code == 0, out
    resumed = tether_cli("resume", "p1", "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["result"] == {"receipt": {"charged_cents": 500, "key": "manual"}}
    assert ledger_lines(ledger) == ["quote 5"]
    charge_line = tether_cli("runs", "show", "p1").stdout.splitlines()[-1]
    assert charge_line.split()[:4] == ["2", "tool", "charge", "ok"]
    assert "(resolved: skip)" in charge_line


def test_resolve_fail_fails_the_run_without_calling_the_effect(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("CLI_AGENTS_LEDGER", str(ledger))
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    tether_cli("resume", "p1")
    out = tether_cli("resolve", "p1", "--fail")
    assert out.code == 0, out
    assert out.stdout == "run p1 is now failed\n"
    tether_cli("worker", "--once")
    run = tether_cli("runs", "show", "p1", "--json").json()["run"]
    assert run["status"] == "failed"
    assert "tether resolve --fail" in run["error"]["resolution"]
    assert ledger_lines(ledger) == ["quote 5"]


@pytest.mark.parametrize("flags", [
    [], ["--retry", "--fail"], ["--retry", "--skip-with", "1"], ["--fail", "--skip-with", "{}"]],
    ids=["none", "retry+fail", "retry+skip", "fail+skip"])
def test_resolve_wants_exactly_one_action(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> None:
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    tether_cli("resume", "p1")
    before = snapshot(tether_cli.db_path)
    out = tether_cli("resolve", "p1", *flags)
    assert_one_error_line(out, "--retry", "--skip-with", "--fail")
    assert snapshot(tether_cli.db_path) == before


def test_resolve_refuses_a_run_that_does_not_need_attention(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "c1")
    before = snapshot(tether_cli.db_path)
    out = tether_cli("resolve", "c1", "--retry")
    assert_one_error_line(out, "c1", "completed", "needs_attention")
    assert snapshot(tether_cli.db_path) == before

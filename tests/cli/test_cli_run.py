"""`tether run` and `tether resume`: exit codes, output, idempotent starts, threads, events."""

from __future__ import annotations

import re
from pathlib import Path

import cli_agents
import pytest
from cli_support import TetherCLI, assert_one_error_line, ledger_lines, make_cli, park_uncertain


@pytest.fixture
def tether_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TetherCLI:
    return make_cli(tmp_path, monkeypatch)


def test_run_prints_the_result_and_exits_0_when_the_run_completes(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:chat")
    assert out.code == 0, out
    assert out.stdout == "the color is teal\n"
    assert out.stderr == ""


def test_run_prints_a_non_string_result_as_json(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:echo", "--input", '{"text": "ab", "times": 2}',
                     "--run-id", "echo-1")
    assert out.code == 0, out
    assert out.json() == {"text": "abab", "run_id": "echo-1"}


def test_run_exits_1_and_names_the_error_when_the_agent_raises(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:broken", "--run-id", "b1")
    assert out.code == 1, out
    assert out.stdout == ""
    assert "run b1 failed: agent.error: the widget is broken" in out.stderr
    shown = tether_cli("runs", "show", "b1", "--json").json()
    assert shown["run"]["status"] == "failed"
    assert shown["run"]["error"]["type"] == "ValueError"


def test_run_exits_3_when_the_agent_waits_for_a_signal(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    assert out.code == 3, out
    assert "run w1 is waiting for approve" in out.stderr
    assert "tether worker" in out.stderr
    assert tether_cli("runs", "show", "w1", "--json").json()["run"]["waiting_for"] == "approve"


def test_run_exits_3_when_the_agent_sleeps_past_the_in_memory_limit(
        tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:napper", "--run-id", "n1")
    assert out.code == 3, out
    assert "run n1 is waiting for a timer until" in out.stderr


def test_run_exits_3_for_a_run_that_needs_attention(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting again with the id of a run parked in needs_attention reports that run."""
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    assert tether_cli("resume", "p1").code == 3
    out = tether_cli("run", "cli_agents:pay", "--run-id", "p1", "--input", '{"amount": 5}')
    assert out.code == 3, out
    assert "run p1 needs_attention: journal.uncertain:" in out.stderr
    assert "tether resolve" in out.stderr


def test_run_passes_input_to_the_agent_and_records_it(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:echo", "--input", '{"text": "hi"}', "--run-id", "i1",
                     "--json")
    assert out.code == 0, out
    run = out.json()
    assert run["input"] == {"text": "hi"}
    assert run["result"] == {"text": "hi", "run_id": "i1"}


def test_run_refuses_input_the_agent_does_not_accept(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:echo", "--input", '{"text": "hi", "colour": "red"}')
    assert_one_error_line(out, "echo", "colour")
    assert tether_cli("runs", "ls", "--json").json() == []


def test_run_json_prints_the_whole_run(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:chat", "--run-id", "j1", "--json")
    assert out.code == 0, out
    run = out.json()
    assert run["run_id"] == "j1"
    assert run["status"] == "completed"
    assert run["agent"] == "chat"
    assert run["agent_ref"] == "cli_agents:chat"
    assert run["result"] == "the color is teal"
    assert run["error"] is None


def test_run_json_prints_a_failed_run_and_still_exits_1(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:broken", "--json")
    assert out.code == 1, out
    run = out.json()
    assert run["status"] == "failed"
    assert run["error"]["message"] == "the widget is broken"


def test_run_with_the_same_run_id_returns_the_same_run_without_running_it_again(
        tether_cli: TetherCLI, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    env = {"CLI_AGENTS_LEDGER": str(ledger)}
    first = tether_cli("run", "cli_agents:pay", "--run-id", "once", "--input", '{"amount": 3}',
                       "--json", env=env)
    again = tether_cli("run", "cli_agents:pay", "--run-id", "once", "--input", '{"amount": 3}',
                       "--json", env=env)
    assert first.code == again.code == 0, (first, again)
    assert first.json() == again.json()
    assert first.json()["result"] == {"receipt": {"charged_cents": 300, "key": "once:2"}}
    assert ledger_lines(ledger) == ["quote 3", "charge once:2 300"]
    assert [run["run_id"] for run in tether_cli("runs", "ls", "--json").json()] == ["once"]


def test_run_with_a_used_run_id_and_other_input_is_refused(tether_cli: TetherCLI) -> None:
    assert tether_cli("run", "cli_agents:echo", "--run-id", "r1",
                      "--input", '{"text": "a"}').code == 0
    before = tether_cli("runs", "show", "r1", "--json").json()
    out = tether_cli("run", "cli_agents:echo", "--run-id", "r1", "--input", '{"text": "b"}')
    assert_one_error_line(out, "run.conflict", "r1")
    assert tether_cli("runs", "show", "r1", "--json").json() == before


def test_runs_on_one_thread_see_the_messages_of_earlier_runs(tether_cli: TetherCLI) -> None:
    first = tether_cli("run", "cli_agents:remember", "--thread", "t1",
                       "--input", '{"text": "hello"}', "--json")
    second = tether_cli("run", "cli_agents:remember", "--thread", "t1",
                        "--input", '{"text": "again"}', "--json")
    other = tether_cli("run", "cli_agents:remember", "--thread", "t2",
                       "--input", '{"text": "alone"}', "--json")
    assert first.json()["result"] == ["hello"]
    assert second.json()["result"] == ["hello", "again"]
    assert second.json()["thread_id"] == "t1"
    assert other.json()["result"] == ["alone"]


def test_run_without_a_thread_keeps_no_history(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:remember", "--input", '{"text": "hello"}')
    out = tether_cli("run", "cli_agents:remember", "--input", '{"text": "again"}', "--json")
    assert out.json()["result"] == ["again"]


def test_run_follow_prints_each_effect_as_it_finishes_then_the_result(
        tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:chat", "--follow")
    assert out.code == 0, out
    lines = out.stdout.splitlines()
    assert lines[-1] == "the color is teal"
    kinds = [line.split()[1] for line in lines[:-1]]
    assert kinds.index("run.started") < kinds.index("llm.finished") < kinds.index(
        "tool.finished")
    assert kinds.count("llm.finished") == 2
    llm_lines = [line for line in lines if " llm.finished " in line]
    assert re.search(r" seq 1 +scripted-chat +-> calls lookup +\(\d+ ms\)$", llm_lines[0])
    assert re.search(r" seq 3 +scripted-chat +-> the color is teal +\(\d+ ms\)$", llm_lines[1])
    tool_line = next(line for line in lines if " tool.finished " in line)
    assert re.search(r" seq 2 +lookup +\(\d+ ms\)$", tool_line), tool_line


def test_run_without_follow_prints_no_events(tether_cli: TetherCLI) -> None:
    out = tether_cli("run", "cli_agents:chat")
    assert "llm.finished" not in out.stdout + out.stderr


def test_resume_of_a_run_with_an_uncertain_charge_exits_3_and_charges_nothing(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("CLI_AGENTS_LEDGER", str(ledger))
    park_uncertain(tether_cli.db, "p1", monkeypatch)
    assert ledger_lines(ledger) == ["quote 5"]
    out = tether_cli("resume", "p1")
    assert out.code == 3, out
    assert "run p1 needs_attention: journal.uncertain: tool 'charge' (seq 2)" in out.stderr
    assert ledger_lines(ledger) == ["quote 5"]  # the quote replayed, the charge not repeated
    assert tether_cli("runs", "show", "p1", "--json").json()["run"]["status"] == "needs_attention"


def test_resume_finishes_an_interrupted_run_replaying_what_was_recorded(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An idempotent charge interrupted mid-call is retried with the same key; the recorded
    quote is not run again."""
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("CLI_AGENTS_LEDGER", str(ledger))
    park_uncertain(tether_cli.db, "s1", monkeypatch, agent=cli_agents.pay_safely)
    out = tether_cli("resume", "s1", "--json")
    assert out.code == 0, out
    assert out.json()["result"] == {"receipt": {"charged_cents": 500, "key": "s1:2"}}
    assert ledger_lines(ledger) == ["quote 5", "charge s1:2 500"]


def test_resume_follow_prints_the_resumed_run_events(
        tether_cli: TetherCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    park_uncertain(tether_cli.db, "s2", monkeypatch, agent=cli_agents.pay_safely)
    out = tether_cli("resume", "s2", "--follow")
    assert out.code == 0, out
    assert " run.resumed " in out.stdout
    assert re.search(r" tool\.finished +seq 2 +charge_once ", out.stdout)
    assert " run.completed " in out.stdout


def test_resume_of_a_completed_run_prints_its_result(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:chat", "--run-id", "c1")
    out = tether_cli("resume", "c1")
    assert out.code == 0, out
    assert out.stdout == "the color is teal\n"


def test_resume_reports_the_status_of_runs_it_cannot_finish(tether_cli: TetherCLI) -> None:
    tether_cli("run", "cli_agents:broken", "--run-id", "b1")
    tether_cli("run", "cli_agents:approval", "--run-id", "w1")
    assert tether_cli("resume", "b1").code == 1
    waiting = tether_cli("resume", "w1")
    assert waiting.code == 3
    assert "waiting for approve" in waiting.stderr

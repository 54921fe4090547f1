"""Bad input: every mistake exits 2 with one ``error: ...`` line, no traceback, and leaves the
database as it was.

The cases run through the real entry point (``python -m tether``, whose ``main`` turns click's
usage errors into one line too); those our own code reports also run in-process.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import (
    Outcome,
    assert_one_error_line,
    make_cli,
    run_tether,
    snapshot,
)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    in_process: bool = True
    """False for mistakes click itself reports (only ``main`` makes those one line)."""


CASES: dict[str, Case] = {
    "show unknown run": Case(("runs", "show", "nope"), ("run.not_found", "'nope'")),
    "resume unknown run": Case(("resume", "nope"), ("run.not_found", "'nope'")),
    "cancel unknown run": Case(("runs", "cancel", "nope"), ("run.not_found", "'nope'")),
    "signal unknown run": Case(("signal", "nope", "approve"), ("run.not_found", "'nope'")),
    "resolve unknown run": Case(("resolve", "nope", "--fail"), ("run.not_found", "'nope'")),
    "input not JSON": Case(("run", "cli_agents:echo", "--input", "{text: 1}"),
                           ("--input", "not valid JSON", "{text: 1}")),
    "input a JSON list": Case(("run", "cli_agents:echo", "--input", "[1, 2]"),
                              ("--input", "must be a JSON object")),
    "input a JSON string": Case(("run", "cli_agents:echo", "--input", '"hi"'),
                                ("--input", "must be a JSON object")),
    "data not JSON": Case(("signal", "w1", "approve", "--data", "{'by': 1}"),
                          ("--data", "not valid JSON")),
    "skip-with not JSON": Case(("resolve", "w1", "--skip-with", "nope"),
                               ("--skip-with", "not valid JSON")),
    "missing module": Case(("run", "no_such_module_here:agent"),
                           ("agent.not_found", "no_such_module_here")),
    "missing attribute": Case(("run", "cli_agents:nobody"),
                              ("agent.not_found", "cli_agents", "nobody")),
    "attribute not an agent": Case(("run", "cli_agents:not_an_agent"),
                                   ("agent.not_found", "str", "not a @tether.agent")),
    "a tool, not an agent": Case(("run", "cli_agents:lookup"),
                                 ("agent.not_found", "Tool", "not a @tether.agent")),
    "agent without colon": Case(("run", "cli_agents"), ("MODULE:AGENT", "'cli_agents'")),
    "input the agent refuses": Case(("run", "cli_agents:echo", "--input", '{"times": 2}'),
                                    ("echo", "text")),
    "reused run id, other agent": Case(("run", "cli_agents:chat", "--run-id", "w1"),
                                       ("run.conflict", "w1")),
    "signal to a finished run": Case(("signal", "c1", "approve"), ("c1", "completed")),
    "resolve a waiting run": Case(("resolve", "w1", "--retry"), ("w1", "needs_attention")),
    "db not a known URL": Case(("--db", "postgres:/nowhere", "runs", "ls"),
                               ("config", "postgres:/nowhere")),
    "missing config file": Case(("--config", "missing.toml", "runs", "ls"),
                                ("missing.toml", "no such config file")),
    "unknown option": Case(("runs", "ls", "--colour"), ("--colour",), in_process=False),
    "unknown global option": Case(("--verbose", "runs", "ls"), ("--verbose",), in_process=False),
    "unknown command": Case(("frobnicate",), ("frobnicate",), in_process=False),
    "missing argument": Case(("runs", "show"), ("RUN_ID",), in_process=False),
    "bad status choice": Case(("runs", "ls", "--status", "done"), ("--status", "done"),
                              in_process=False),
    "bad durability choice": Case(("--durability", "disk", "runs", "ls"), ("--durability",),
                                  in_process=False),
    "option without value": Case(("run", "cli_agents:echo", "--input"), ("--input",),
                                 in_process=False),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding a completed run ``c1`` and a run ``w1`` waiting for a signal."""
    work = tmp_path_factory.mktemp("template")
    assert run_tether("run", "cli_agents:chat", "--run-id", "c1", cwd=work).code == 0
    assert run_tether("run", "cli_agents:approval", "--run-id", "w1", cwd=work).code == 3
    return work / ".tether" / "tether.db"


@pytest.fixture
def work(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template database, in ``tmp_path/.tether/tether.db``."""
    (tmp_path / ".tether").mkdir()
    shutil.copy(template, tmp_path / ".tether" / "tether.db")
    return tmp_path


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_to_the_entry_point_is_one_error_line_and_changes_nothing(
        case: Case, work: Path) -> None:
    db = work / ".tether" / "tether.db"
    before = snapshot(db)
    out = run_tether(*case.args, cwd=work)
    assert_one_error_line(out, *case.fragments)
    assert out.stdout == ""
    assert snapshot(db) == before


@pytest.mark.parametrize("case", [c for c in CASES.values() if c.in_process],
                         ids=[k for k, c in CASES.items() if c.in_process])
def test_bad_input_in_process_is_one_error_line_and_changes_nothing(
        case: Case, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tether_cli = make_cli(work, monkeypatch)
    db = work / ".tether" / "tether.db"
    before = snapshot(db)
    out = tether_cli(*case.args, db=False)
    assert_one_error_line(out, *case.fragments)
    assert snapshot(db) == before


@pytest.mark.parametrize("args", [("runs", "ls"), ("runs", "show", "c1"),
                                  ("run", "cli_agents:chat"), ("worker", "--once")],
                         ids=["ls", "show", "run", "worker"])
def test_a_corrupt_database_file_is_reported_and_left_untouched(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "garbage.db"
    garbage = bytes(range(256)) * 40
    db.write_bytes(garbage)
    out = run_tether("--db", f"sqlite:///{db.name}", *args, cwd=tmp_path)
    assert_one_error_line(out, "store.corrupt", "garbage.db")
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.db"]


def test_a_database_from_a_newer_tether_is_refused(tmp_path: Path) -> None:
    """A schema version above what this Tether knows: refused, file untouched."""
    db = tmp_path / "future.db"
    assert run_tether("--db", "sqlite:///future.db", "runs", "ls", cwd=tmp_path).code == 0
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    before = db.read_bytes()
    out = run_tether("--db", "sqlite:///future.db", "runs", "ls", cwd=tmp_path)
    assert_one_error_line(out, "schema", "99")
    assert db.read_bytes() == before


def test_an_agent_module_that_fails_to_import_is_one_error_line(
        tmp_path: Path) -> None:
    (tmp_path / "exploding.py").write_text("raise RuntimeError('bad config at import')\n")
    out = run_tether("run", "exploding:agent", cwd=tmp_path)
    assert_one_error_line(out, "exploding", "bad config at import")


def test_bad_settings_in_the_environment_are_one_error_line(tmp_path: Path) -> None:
    out = run_tether("runs", "ls", cwd=tmp_path, env={"TETHER_DURABILITY": "disk"})
    assert_one_error_line(out, "durability", "'disk'")
    out = run_tether("runs", "ls", cwd=tmp_path, env={"TETHER_LEASE_SECONDS": "soon"})
    assert_one_error_line(out, "TETHER_LEASE_SECONDS", "number", "'soon'")


def test_a_malformed_config_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "tether.toml").write_text("[runtime\nlease_seconds = 5\n")
    out = run_tether("runs", "ls", cwd=tmp_path)
    assert_one_error_line(out, "tether.toml", "not valid TOML")


def test_errors_from_the_runtime_name_their_code(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`error: CODE: message`, so scripts can tell one mistake from another."""
    tether_cli = make_cli(tmp_path, monkeypatch)
    line = assert_one_error_line(tether_cli("runs", "show", "nope"))
    assert line == ("error: run.not_found: no run with id 'nope' "
                    "(list runs with `tether runs ls`)")


def test_usage_errors_from_click_are_one_line_without_the_usage_text(tmp_path: Path) -> None:
    out: Outcome = run_tether("runs", "ls", "--colour", cwd=tmp_path)
    line = assert_one_error_line(out, "--colour")
    assert line.startswith("error: usage: ")
    assert "Usage:" not in line
    assert "--help" not in line

"""The real entry point (``python -m tether`` and the ``tether`` script), where the database
lives, ``--version`` and ``--help``, a real crash settled from the command line, and a
long-running worker stopped by SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import cli_agents
import pytest
from cli_support import HERE, TetherCLI, ledger_lines, make_cli, run_tether

import tether


@pytest.fixture
def tether_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TetherCLI:
    return make_cli(tmp_path, monkeypatch)


def run_ids_in(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]


# -- version and help ------------------------------------------------------------------------


def test_version_prints_the_package_version(tether_cli: TetherCLI) -> None:
    out = tether_cli("--version", db=False)
    assert out.code == 0
    assert out.stdout == f"tether {tether.__version__}\n"


def test_the_entry_point_runs_a_command_and_exits_0(tmp_path: Path) -> None:
    out = run_tether("--version", cwd=tmp_path)
    assert (out.code, out.stdout, out.stderr) == (0, f"tether {tether.__version__}\n", "")


def test_the_installed_tether_script_is_the_same_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "tether"
    if not script.exists():
        pytest.skip("the tether script is not installed next to this interpreter")
    proc = subprocess.run([str(script), "runs", "ls"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "no runs\n", "")


HELP: dict[tuple[str, ...], tuple[str, list[str]]] = {
    (): ("Tether: durable, governed agent runs.",
         ["--db", "--config", "--durability", "--version", "run", "resume", "worker", "signal",
          "resolve", "runs", "demo", "TETHER_DB", "TETHER_LEASE_SECONDS"]),
    ("run",): ("Run an agent here and wait until it completes, fails or parks.",
               ["MODULE:AGENT", "--input", "--run-id", "--thread", "--follow", "--json",
                "0 completed, 1 failed or cancelled, 3 waiting or needs_attention, 2 bad usage",
                "--tenant", "--principal"]),
    ("resume",): ("Resume one run here", ["RUN_ID", "--follow", "--json"]),
    ("worker",): ("Execute runs from the database", ["--once", "--concurrency", "--follow"]),
    ("signal",): ("Send a signal to a run", ["RUN_ID", "NAME", "--data", "--principal"]),
    ("resolve",): ("Settle a run in needs_attention", ["RUN_ID", "--retry", "--skip-with",
                                                       "--fail", "--tenant", "--principal"]),
    ("runs",): ("List, inspect and cancel runs.", ["ls", "show", "cancel"]),
    ("runs", "ls"): ("List runs, newest first.", ["--status", "--agent", "--limit", "--json",
                                                   "needs_attention", "--tenant", "--principal"]),
    ("runs", "show"): ("Show a run", ["RUN_ID", "--json", "--principal"]),
    ("runs", "cancel"): ("Cancel a run", ["RUN_ID", "--reason", "--principal"]),
    ("demo",): ("Run an agent, SIGKILL it mid-run", ["--dir"]),
}


@pytest.mark.parametrize("command", HELP.keys(), ids=[" ".join(c) or "tether" for c in HELP])
def test_help_of_each_command_describes_it_and_its_options(
        tether_cli: TetherCLI, command: tuple[str, ...]) -> None:
    summary, names = HELP[command]
    out = tether_cli(*command, "--help", db=False)
    assert out.code == 0, out
    assert out.stdout.startswith("Usage: ")
    text = " ".join(out.stdout.split())  # help is wrapped to the terminal width
    assert summary in text
    for name in names:
        assert name in text, name
    assert tether_cli(*command, "-h", db=False).stdout == out.stdout


def test_help_through_the_entry_point_exits_0(tmp_path: Path) -> None:
    out = run_tether("runs", "show", "--help", cwd=tmp_path)
    assert out.code == 0
    assert "Show a run" in out.stdout
    assert out.stderr == ""


# -- which database --------------------------------------------------------------------------


def test_without_db_the_database_is_dot_tether_in_the_working_directory(
        tether_cli: TetherCLI, tmp_path: Path) -> None:
    assert tether_cli("run", "cli_agents:chat", "--run-id", "d1", db=False).code == 0
    assert run_ids_in(tmp_path / ".tether" / "tether.db") == ["d1"]


def test_tether_db_in_the_environment_picks_the_database(
        tether_cli: TetherCLI, tmp_path: Path) -> None:
    env = {"TETHER_DB": f"sqlite:///{tmp_path / 'from-env.db'}"}
    assert tether_cli("run", "cli_agents:chat", "--run-id", "e1", db=False, env=env).code == 0
    assert run_ids_in(tmp_path / "from-env.db") == ["e1"]
    assert not (tmp_path / ".tether").exists()
    listed = tether_cli("runs", "ls", "--json", db=False, env=env).json()
    assert [run["run_id"] for run in listed] == ["e1"]


def test_db_option_wins_over_tether_db(tether_cli: TetherCLI, tmp_path: Path) -> None:
    env = {"TETHER_DB": f"sqlite:///{tmp_path / 'from-env.db'}"}
    assert tether_cli("run", "cli_agents:chat", "--run-id", "o1", env=env).code == 0
    assert run_ids_in(tether_cli.db_path) == ["o1"]
    assert not (tmp_path / "from-env.db").exists()


def test_a_relative_sqlite_url_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    out = run_tether("--db", "sqlite:///data/runs.db", "run", "cli_agents:echo", "--run-id", "r1",
                     "--input", '{"text": "x"}', cwd=tmp_path)
    assert out.code == 0, out
    assert run_ids_in(tmp_path / "data" / "runs.db") == ["r1"]


def test_tether_db_reaches_the_real_entry_point(tmp_path: Path) -> None:
    env = {"TETHER_DB": "sqlite:///elsewhere.db"}
    assert run_tether("run", "cli_agents:chat", "--run-id", "x1", cwd=tmp_path, env=env).code == 0
    out = run_tether("runs", "ls", "--json", cwd=tmp_path, env=env)
    assert [run["run_id"] for run in json.loads(out.stdout)] == ["x1"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["elsewhere.db"]


def test_the_memory_database_lives_only_as_long_as_the_command(tmp_path: Path) -> None:
    out = run_tether("--db", "memory://", "run", "cli_agents:chat", cwd=tmp_path)
    assert (out.code, out.stdout) == (0, "the color is teal\n")
    assert run_tether("--db", "memory://", "runs", "ls", cwd=tmp_path).stdout == "no runs\n"
    assert list(tmp_path.iterdir()) == []


def test_a_tether_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "tether.toml").write_text('[runtime]\ndb = "sqlite:///configured.db"\n')
    assert run_tether("run", "cli_agents:chat", "--run-id", "t1", cwd=tmp_path).code == 0
    assert run_ids_in(tmp_path / "configured.db") == ["t1"]


# -- a real crash, settled from the command line ---------------------------------------------


def test_a_crash_during_a_charge_is_settled_from_the_command_line(tmp_path: Path) -> None:
    """The process dies inside a non-idempotent charge: `resume` parks the run instead of
    charging again, `resolve --skip-with` records what the operator knows, a worker finishes."""
    ledger = tmp_path / "ledger.txt"
    env = {"CLI_AGENTS_LEDGER": str(ledger)}
    crashed = run_tether("run", "cli_agents:pay", "--run-id", "p1", "--input", '{"amount": 7}',
                         cwd=tmp_path, env={**env, "CLI_AGENTS_CHARGE": "crash"})
    assert crashed.code == cli_agents.CRASH_EXIT_CODE, crashed
    listed = json.loads(run_tether("runs", "ls", "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [("p1", "running")]

    parked = run_tether("resume", "p1", cwd=tmp_path, env=env)
    assert parked.code == 3, parked
    assert "needs_attention: journal.uncertain: tool 'charge' (seq 2)" in parked.stderr

    resolved = run_tether("resolve", "p1", "--skip-with", '{"charged_cents": 700, "key": "ops"}',
                          cwd=tmp_path)
    assert (resolved.code, resolved.stdout) == (
        0, "run p1 is now pending; a worker will resume it\n")
    assert run_tether("worker", "--once", cwd=tmp_path, env=env).code == 0

    shown = json.loads(run_tether("runs", "show", "p1", "--json", cwd=tmp_path).stdout)
    assert shown["run"]["status"] == "completed"
    assert shown["run"]["result"] == {"receipt": {"charged_cents": 700, "key": "ops"}}
    assert ledger_lines(ledger) == ["quote 7"]  # quoted once, never charged by the runtime


def test_a_crash_during_an_idempotent_charge_is_finished_by_the_next_worker(
        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    env = {"CLI_AGENTS_LEDGER": str(ledger)}
    crashed = run_tether("run", "cli_agents:pay_safely", "--run-id", "s1",
                         "--input", '{"amount": 7}', cwd=tmp_path,
                         env={**env, "CLI_AGENTS_CHARGE": "crash"})
    assert crashed.code == cli_agents.CRASH_EXIT_CODE, crashed
    assert run_tether("worker", "--once", cwd=tmp_path, env=env).code == 0
    shown = json.loads(run_tether("runs", "show", "s1", "--json", cwd=tmp_path).stdout)
    assert shown["run"]["status"] == "completed"
    charge = shown["journal"][1]
    assert (charge["name"], charge["state"], charge["attempts"]) == ("charge_once", "ok", 2)
    assert ledger_lines(ledger) == ["quote 7", "charge s1:2 700"]


# -- a long-running worker -------------------------------------------------------------------


def test_a_worker_runs_signalled_runs_until_sigterm_and_then_exits_0(tmp_path: Path) -> None:
    assert run_tether("run", "cli_agents:approval", "--run-id", "w1", cwd=tmp_path).code == 3
    env = {"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin", "TETHER_POLL_INTERVAL_SECONDS": "0.1"}
    worker = subprocess.Popen([sys.executable, "-m", "tether", "worker"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert run_tether("signal", "w1", "approve", "--data", "true", cwd=tmp_path).code == 0
        db = tmp_path / ".tether" / "tether.db"
        deadline = time.monotonic() + 30
        while True:
            with closing(sqlite3.connect(db)) as conn:
                status = conn.execute("SELECT status FROM runs WHERE run_id = 'w1'").fetchone()[0]
            if status == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == "completed"
        assert worker.poll() is None  # still serving
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    assert stderr.splitlines()[0].startswith("tether worker ")
    assert "stopping" in stderr
    assert "Traceback" not in stderr

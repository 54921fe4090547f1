"""Helpers for the command-line tests: the CLI in-process, the real entry point, database
snapshots, and a run left with an uncertain side effect as a crash would leave it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import cli_agents
import pytest
from click.testing import CliRunner

import tether
from tether.cli import cli
from tether.config import Settings

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Outcome:
    """What one ``tether`` command did: exit code, stdout and stderr."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class TetherCLI:
    """Runs ``tether --db DB ...`` in this process with click's ``CliRunner``."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.db = f"sqlite:///{db_path}"

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 db: bool = True) -> Outcome:
        argv = ["--db", self.db, *args] if db else list(args)
        result = CliRunner().invoke(cli, argv, env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # an unexpected crash: show its traceback
        return Outcome(result.exit_code, result.stdout, result.stderr)


def make_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TetherCLI:
    """A CLI on a fresh database in ``tmp_path``, run from ``tmp_path``.

    The CLI puts the working directory on ``sys.path`` (agents are named relative to it, as
    uvicorn does); ``sys.path`` is restored after the test.
    """
    monkeypatch.setattr(sys, "path", [*sys.path])
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)
    return TetherCLI(tmp_path / "tether.db")


def run_tether(*args: str, cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 60) -> Outcome:
    """Run the real entry point, ``python -m tether ARGS``, with ``cli_agents`` importable."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "CLI_AGENTS_"))}
    full_env["PYTHONPATH"] = str(HERE)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "tether", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_one_error_line(outcome: Outcome, *fragments: str, code: int = 2) -> str:
    """The command failed with ``code`` and exactly one ``error: ...`` line, no traceback."""
    lines = outcome.stderr.splitlines()
    assert outcome.code == code, outcome
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite database, to show that a command changed nothing."""
    if not db_path.exists():
        return {}
    with closing(sqlite3.connect(db_path)) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
                for table in tables}


def ledger_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def park_uncertain(db: str, run_id: str, monkeypatch: pytest.MonkeyPatch, *,
                   agent: tether.Agent = cli_agents.pay, amount: int = 5) -> None:
    """Leave ``run_id`` with its charge's intent durable and no outcome, as a crash would.

    The charge hangs; once it has started (its intent is committed before that), the runtime
    is closed, which cancels the call. A non-idempotent charge then needs a person.
    """
    monkeypatch.setenv("CLI_AGENTS_CHARGE", "hang")

    async def main() -> None:
        settings = Settings(db=db, poll_interval_seconds=0.05, flush_interval_ms=5)
        with anyio.fail_after(30):
            async with tether.Runtime(settings=settings, worker=False) as rt, \
                    rt.events.subscribe(run_id) as events:
                await rt.start(agent, {"amount": amount}, run_id=run_id)
                async for event in events:
                    if event.type == "tool.started" and event.data["name"] != "quote":
                        return

    anyio.run(main)
    monkeypatch.delenv("CLI_AGENTS_CHARGE")

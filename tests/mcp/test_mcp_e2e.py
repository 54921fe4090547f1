"""End to end: a ToolLoop agent calls a side-effecting MCP tool in a real ``tether run``
process on SQLite, which is SIGKILLed after the call's outcome is on record and before the run
finishes; ``tether worker --once`` resumes it. The server saw the call once, the final answer
carries the (replayed) result, and no server process outlives its launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp_support import HERE, wait_until_gone

from tether.config import Settings
from tether.store import Record, RecordState, open_store
from tether.types import RunStatus

pytestmark = pytest.mark.anyio

RUN_ID = "note-1"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts; killed and reaped at the end, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def tether_command(db_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tether", "--db", db_url, *args]


def spawn(children: list[subprocess.Popen[bytes]], args: list[str], env: dict[str, str],
          directory: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session, its output appended to ``run.log``."""
    with (directory / "run.log").open("ab") as log:
        child = subprocess.Popen(args, env=env, cwd=directory, stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    children.append(child)
    return child


def environment(directory: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TETHER_")}
    env.update(PYTHONPATH=str(HERE), NOTES_FILE=str(directory / "notes.txt"),
               NOTES_PIDS=str(directory / "server-pids.txt"),
               TETHER_POLL_INTERVAL_SECONDS="0.05", TETHER_FLUSH_INTERVAL_MS="5", **extra)
    return env


async def journal(db_url: str) -> list[Record]:
    store = open_store(Settings(db=db_url))
    await store.open()
    try:
        return await store.load_journal(RUN_ID)
    finally:
        await store.aclose()


async def test_a_completed_mcp_call_is_not_repeated_after_a_crash(
        tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    notes = tmp_path / "notes.txt"
    run = spawn(children, tether_command(db_url, "run", "mcp_agents:scribe", "--run-id", RUN_ID,
                                         "--input", json.dumps({"request": "note: buy milk"})),
                environment(tmp_path, NOTES_MODEL_LATENCY="1.5"), tmp_path)

    # Kill it once the MCP call's outcome is durable, while the model "thinks" of the answer.
    with anyio.fail_after(60):
        while True:
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            if (tmp_path / "tether.db").exists():
                records = await journal(db_url)
                if any(r.kind == "tool" and r.state == RecordState.OK for r in records):
                    break
            await anyio.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=10)
    assert notes.read_text().splitlines() == ["buy milk"]

    worker = spawn(children, tether_command(db_url, "worker", "--once"), environment(tmp_path),
                   tmp_path)
    with anyio.fail_after(60):
        while worker.poll() is None:
            await anyio.sleep(0.05)
    assert worker.returncode == 0, (tmp_path / "run.log").read_text()

    show = subprocess.run(tether_command(db_url, "runs", "show", RUN_ID, "--json"),
                          env=environment(tmp_path), cwd=tmp_path, capture_output=True,
                          check=True)
    shown = json.loads(show.stdout)["run"]
    assert shown["status"] == str(RunStatus.COMPLETED)
    assert shown["result"] == "Done: noted 'buy milk' (line 1)"
    # The server was called once in all: the resumed run replayed the recorded outcome.
    assert notes.read_text().splitlines() == ["buy milk"]
    tool_records = [r for r in await journal(db_url) if r.kind == "tool"]
    assert [(r.name, r.state, r.attempts) for r in tool_records] == [
        ("append", RecordState.OK, 1)]
    # Each process launched its own server (the resumed one too, for the tools' schemas), and
    # none is left: the killed run's server saw its stdin close and exited.
    pids = [int(line) for line in (tmp_path / "server-pids.txt").read_text().split()]
    assert len(pids) == 2
    assert all(wait_until_gone(pid) for pid in pids)

"""End to end with real peers on both sides: a ToolLoop agent thinks with the OpenAI SDK against
the scripted model server and writes through a real MCP server, in a ``tether run`` process
that is SIGKILLed after the MCP call's outcome is on record; ``tether worker --once`` resumes
it. The MCP call is not repeated, the model is asked only what was not yet answered, and the
final answer is the scripted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tether.config import Settings
from tether.store import Record, RecordState, open_store
from tether.types import RunStatus

from .provider_support import KEY_VARIABLE, SENTINEL_KEY, ModelServer

pytestmark = pytest.mark.anyio

MCP_TESTS = Path(__file__).resolve().parent.parent / "mcp"
RUN_ID = "served-note-1"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def tether(directory: Path, children: list[subprocess.Popen[bytes]], *args: str,
           ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(PYTHONPATH=str(MCP_TESTS), NOTES_FILE=str(directory / "notes.txt"),
               TETHER_POLL_INTERVAL_SECONDS="0.05", TETHER_FLUSH_INTERVAL_MS="5",
               **{KEY_VARIABLE: SENTINEL_KEY})
    with (directory / "run.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tether", "--db", f"sqlite:///{directory / 'tether.db'}",
             "--config", str(directory / "tether.toml"), *args], env=env, cwd=directory,
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    children.append(child)
    return child


async def journal(directory: Path) -> list[Record]:
    store = open_store(Settings(db=f"sqlite:///{directory / 'tether.db'}"))
    await store.open()
    try:
        return await store.load_journal(RUN_ID)
    finally:
        await store.aclose()


async def test_a_served_model_and_an_mcp_tool_resume_after_sigkill_without_repeats(
        tmp_path: Path, model_server: ModelServer,
        children: list[subprocess.Popen[bytes]]) -> None:
    test_id = uuid.uuid4().hex
    # Every model request waits 1.5 s at the server: time to kill the process between the
    # MCP call and the model's final answer.
    (tmp_path / "tether.toml").write_text(f"""
[models.scribe]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{model_server.base_url('openai')}"
api_key_env = "{KEY_VARIABLE}"

[models.scribe.headers]
X-Test-Id = "{test_id}"
x-aimock-chaos-latency = "1500"
""")
    run = tether(tmp_path, children, "run", "mcp_agents:served_scribe", "--run-id", RUN_ID,
                 "--input", json.dumps({"request": "note: buy oat milk"}))
    with anyio.fail_after(60):
        while True:
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            if (tmp_path / "tether.db").exists() and any(
                    r.kind == "tool" and r.state == RecordState.OK
                    for r in await journal(tmp_path)):
                break
            await anyio.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=10)
    assert (tmp_path / "notes.txt").read_text().splitlines() == ["buy oat milk"]
    asked_before = len(model_server.requests(test_id))

    worker = tether(tmp_path, children, "worker", "--once")
    with anyio.fail_after(60):
        while worker.poll() is None:
            await anyio.sleep(0.05)
    assert worker.returncode == 0, (tmp_path / "run.log").read_text()

    shown = subprocess.run(
        [sys.executable, "-m", "tether", "--db", f"sqlite:///{tmp_path / 'tether.db'}", "runs",
         "show", RUN_ID, "--json"], cwd=tmp_path, capture_output=True, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_")})
    run_json = json.loads(shown.stdout)["run"]
    assert run_json["status"] == str(RunStatus.COMPLETED)
    assert run_json["result"] == "Noted: buy oat milk."
    # The MCP server saw one call in all; the model was asked once more after the crash (the
    # answer it had not given yet), never again for the tool call it had already made.
    assert (tmp_path / "notes.txt").read_text().splitlines() == ["buy oat milk"]
    assert len(model_server.requests(test_id)) == asked_before + 1
    records = await journal(tmp_path)
    assert [(r.kind, r.name, r.state) for r in records if r.kind in ("llm", "tool")] == [
        ("llm", "scribe", "ok"), ("tool", "append", "ok"), ("llm", "scribe", "ok")]

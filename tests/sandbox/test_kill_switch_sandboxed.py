"""The kill switch reaches into the sandbox: cancelling a run from another process stops its
in-flight sandboxed tool call, and no process of it is left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import tether
from conftest import fast_settings
from tether.sandbox import Sandbox
from tether.types import RunStatus

from .lingering_tools import lingerer

pytestmark = pytest.mark.anyio


def sandbox_processes(uid_base: int) -> list[str]:
    """Live processes of sandbox uids, from the host's /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status and int(status.split("Uid:")[1].split()[0]) >= uid_base:
            found.append(entry)
    return found


async def test_cancelling_a_run_kills_its_sandboxed_tool(
        tmp_path: Path, sandbox: Sandbox, no_leftover_processes: None) -> None:
    db = f"sqlite:///{tmp_path / 'tether.db'}"
    base = sandbox.config.uid_base
    async with tether.Runtime(settings=fast_settings(db, lease_seconds=0.3),
                              sandbox=sandbox, agents=[lingerer]) as rt:
        handle = await rt.start(lingerer)
        with anyio.fail_after(30):
            while not sandbox_processes(base):
                await anyio.sleep(0.05)
        cancelled = subprocess.run(
            [sys.executable, "-m", "tether", "--db", db, "runs", "cancel", handle.run_id,
             "--reason", "runaway"], capture_output=True, text=True, timeout=60,
            cwd=tmp_path, check=False)
        assert cancelled.returncode == 0, cancelled.stderr
        with anyio.fail_after(15):  # the heartbeat sees the cancel and stops the call
            while rt.active_runs or sandbox_processes(base):
                await anyio.sleep(0.05)
        run = await rt.get(handle.run_id)
        assert run.status is RunStatus.CANCELLED
        assert [(r.kind, r.name, r.state) for r in await rt.journal(handle.run_id)] == [
            ("tool", "linger", "started")]

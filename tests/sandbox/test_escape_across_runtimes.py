"""Escape-battery rows that need more than one runtime on the machine: sandboxes of different
``Sandbox`` objects and processes never share a uid, and what a SIGKILLed runtime left behind
(cgroups, workspaces, proxy directories) is cleared by the next one."""

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

from peers import missing
from tether.errors import SandboxError
from tether.sandbox import Sandbox, sandbox_config
from tether.sandbox._launch import LaunchSpec, SandboxProcess

pytestmark = [pytest.mark.anyio, pytest.mark.escape]

_HELPER = Path(__file__).with_name("runtime_process.py")
# A range of uids no other test uses, so only this test's sandboxes compete for them.
_UID_BASE, _UID_COUNT = 1_950_000_000, 4
_DEFAULT_UIDS = Sandbox().config.uid_base, Sandbox().config.uid_count


def _host_uid(pid: int) -> int:
    """The real uid of a process, read from the host's /proc."""
    return int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])


@pytest.fixture
def runtimes() -> Iterator[list[subprocess.Popen[str]]]:
    """Runtime processes started by a test; each is stopped (by its pid) afterwards."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()  # a closed stdin ends it, and it removes what it made
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _start_runtime(runtimes: list[subprocess.Popen[str]], *args: object,
                   ) -> tuple[subprocess.Popen[str], list[dict[str, object]]]:
    process = subprocess.Popen([sys.executable, str(_HELPER), *map(str, args)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    runtimes.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the runtime process exited with {process.wait()}"
    held: list[dict[str, object]] = json.loads(line)
    return process, held


async def test_sandboxes_of_two_objects_and_two_processes_never_share_a_uid(
        sandbox: Sandbox, runtimes: list[subprocess.Popen[str]]) -> None:
    if os.geteuid() != 0:
        missing("only a root runtime hands out uids (otherwise sandboxes run as its own)")
    config = sandbox_config({"uid_base": _UID_BASE, "uid_count": _UID_COUNT})
    mine = [Sandbox(config), Sandbox(config)]
    held = [SandboxProcess(LaunchSpec(each.profile("default"), "exec", ("sleep", "60")),
                           each.layers, each._uids) for each in mine]
    try:
        for process in held:
            await process.start()
        # Another runtime on the machine, with the same range, while these two run.
        _, theirs = _start_runtime(runtimes, 2, _UID_BASE, _UID_COUNT)
        uids = [_host_uid(p.pid) for p in held if p.pid is not None]
        uids += [_host_uid(int(str(t["pid"]))) for t in theirs]
        assert sorted(uids) == list(range(_UID_BASE, _UID_BASE + _UID_COUNT))
        # The range is used up machine-wide: a fifth sandbox is refused, not doubled up.
        with pytest.raises(SandboxError, match="in use"):
            await mine[0].run(["true"])
    finally:
        for process in held:
            await process.aclose()
    # Given back: the range serves again.
    assert (await mine[1].run(["true"])).exit_code == 0


def _leftovers(held: dict[str, object]) -> list[Path]:
    paths = [Path(str(held["workspace"])), Path(str(held["proxy_dir"]))]
    return paths + [Path(str(p)) for p in held["cgroups"]]  # type: ignore[attr-defined]


async def test_the_next_runtime_clears_what_a_killed_one_left(
        sandbox: Sandbox, runtimes: list[subprocess.Popen[str]]) -> None:
    if sandbox.layers.cgroup is None:
        missing("no cgroup with memory and pids controllers here")
    # A profile with a network allow-list: its sandbox gets a proxy directory too.
    # The default uid range: the next runtime sweeps only what its own sandboxes could own.
    killed, [held] = _start_runtime(runtimes, 1, *_DEFAULT_UIDS, "example.com")
    left = _leftovers(held)
    for cgroup in held["cgroups"]:  # type: ignore[attr-defined]
        # Under Tether's own parent, not the runtime's own cgroup.
        assert Path(cgroup).parent.name == "tether"
        assert Path(cgroup).parent.parent.parent == Path("/sys/fs/cgroup")
    await anyio.sleep(0.3)  # older than the next runtime by more than the sweep's margin
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert all(path.exists() for path in left), "SIGKILL left nothing to sweep"
    # The next runtime: its sandbox's first use sweeps.
    subprocess.run([sys.executable, "-c", "from tether.sandbox import Sandbox; "
                    "Sandbox().layers"], check=True, timeout=60)
    assert [path for path in left if path.exists()] == []


async def test_a_live_runtimes_sandbox_is_never_swept(
        sandbox: Sandbox, runtimes: list[subprocess.Popen[str]]) -> None:
    alive, [held] = _start_runtime(runtimes, 1, *_DEFAULT_UIDS, "example.com")
    await anyio.sleep(0.3)  # old enough to be swept, were it not held
    subprocess.run([sys.executable, "-c", "from tether.sandbox import Sandbox; "
                    "Sandbox().layers"], check=True, timeout=60)
    assert all(path.exists() for path in _leftovers(held))
    assert alive.stdin is not None
    alive.stdin.close()  # its runtime ends it, and removes what it made
    assert alive.wait(timeout=30) == 0
    assert [path for path in _leftovers(held) if path.exists()] == []

"""Sandbox test fixtures: a real sandbox on this machine (bubblewrap must be installed: locally
its absence skips, in CI it fails), and a record of which escape tests really ran, for the
meta-test."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import executable
from tether.sandbox import Sandbox

from .sandbox_support import ESCAPE_OUTCOMES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "escape: a row of the sandbox escape battery")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "escape" in report.keywords and (report.when == "call" or report.outcome == "skipped"):
        ESCAPE_OUTCOMES[report.nodeid] = report.outcome


@pytest.fixture
def sandbox() -> Sandbox:
    executable("bwrap")
    return Sandbox()


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A workspace directory the sandbox's uid can reach (pytest's tmp_path is under a 0700
    directory, which a sandbox uid cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix="tether-test-workspace-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_leftover_processes() -> Iterator[None]:
    """Fails the test if a process of a sandbox uid outlives it. Sandboxes of other runtimes
    on the machine (other test runs) are told apart by their cgroups, whose names carry the
    pid of the runtime that made them."""
    yield
    base = Sandbox().config.uid_base
    mine = f"tether-sandbox-{os.stat('/proc/self/ns/pid').st_ino}-{os.getpid()}-"
    leftovers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                cgroups = Path(f"/proc/{entry}/cgroup").read_text()
            except OSError:
                continue
            if "State:\tZ" in status:
                continue  # exited; only its parent's reaping is pending
            sandboxes = [line.rsplit("/", 1)[-1] for line in cgroups.splitlines()
                         if "/tether-sandbox-" in line]
            if sandboxes and not any(name.startswith(mine) for name in sandboxes):
                continue  # another runtime's sandbox
            if int(status.split("Uid:")[1].split()[0]) >= base:
                leftovers.append((entry, status.split("\n", 1)[0]))
    assert not leftovers, f"sandbox processes left behind: {leftovers}"


@pytest.fixture
def loopback_listeners() -> Iterator[dict[str, object]]:
    """A TCP and a UDP listener on 127.0.0.1 that count what reaches them."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    tcp.settimeout(0.2)
    seen: dict[str, object] = {"tcp_port": tcp.getsockname()[1], "udp_port": udp.getsockname()[1]}
    yield seen
    for name, sock in (("tcp", tcp), ("udp", udp)):
        try:
            if name == "tcp":
                sock.accept()
            else:
                sock.recv(100)
            seen[name] = "reached"
        except TimeoutError:
            seen[name] = "quiet"
        sock.close()
    assert seen["tcp"] == seen["udp"] == "quiet"

"""Sandbox test fixtures: a real sandbox on this machine (bubblewrap must be installed: locally
its absence skips, in CI it fails), and a record of which escape tests really ran, for the
meta-test."""

from __future__ import annotations

import os
import shutil
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
    """Fails the test if a process of a sandbox uid outlives it."""
    yield
    base = Sandbox().config.uid_base
    leftovers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if "State:\tZ" in status:
                continue  # exited; only its parent's reaping is pending
            if int(status.split("Uid:")[1].split()[0]) >= base:
                leftovers.append((entry, status.split("\n", 1)[0]))
    assert not leftovers, f"sandbox processes left behind: {leftovers}"

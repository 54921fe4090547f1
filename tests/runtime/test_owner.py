"""Owner ids: a worker on this host that died is recognised at once; a live one, or one in
another pid namespace (another container with the same host name), never is."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tether.runtime._owner import new_owner_id, owner_is_dead

PRINT_OWNER_AND_WAIT = ("import sys; from tether.runtime._owner import new_owner_id; "
                        "print(new_owner_id(), flush=True); sys.stdin.read()")


def start_worker_like(prefix: list[str]) -> tuple[subprocess.Popen[str], str]:
    """A process that prints its owner id and waits until its stdin closes."""
    child = subprocess.Popen([*prefix, sys.executable, "-c", PRINT_OWNER_AND_WAIT],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def stop(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    child.wait(timeout=10)
    child.stdout.close()


def test_a_live_worker_is_alive_and_a_dead_one_dead() -> None:
    child, owner = start_worker_like([])
    try:
        assert not owner_is_dead(owner)
    finally:
        stop(child)
    assert owner_is_dead(owner)
    assert not owner_is_dead(new_owner_id())  # this very process


def test_a_worker_in_another_pid_namespace_is_never_taken_for_dead() -> None:
    """Another container with this host name: its pids mean nothing here (its pid 1 is not
    ours), so only its lease can tell."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed")
    child, owner = start_worker_like([unshare, "--pid", "--fork", "--mount-proc"])
    try:
        if not owner:
            pytest.skip("cannot make a pid namespace here (unshare needs privileges)")
        assert owner.split(":")[0] != new_owner_id().split(":")[0]  # another namespace
        assert not owner_is_dead(owner)
    finally:
        stop(child)
    assert not owner_is_dead(owner)  # gone, but from elsewhere: the lease decides

"""Who owns a run: a worker id that also tells, on the same host, whether the worker died.

A lease alone makes a crashed worker's runs wait until the lease expires (30 s by default). On
one machine we can do better: the owner id carries the host, the pid and the process start
time, so a new worker sees at once that the old one is gone (a pid reused by another process
has another start time) and takes its runs over without waiting.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def _host() -> str:
    """This machine as owner ids name it: the host name and the pid namespace. Two containers
    may share a host name but not a pid namespace; without it, each would read the other's
    live workers as dead (their pids do not exist here) and take their runs at once."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}~{namespace}"


_HOST = _host()


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it don't.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return "dead"  # a zombie has exited; only its exit status waits to be collected
    return fields[19]  # field 22: start time in clock ticks since boot


def new_owner_id() -> str:
    """``host:pid:start:nonce``; the nonce tells runtimes in one process apart."""
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_start_ticks(pid) or '-'}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this host and its process is gone."""
    try:
        host, pid_text, start, _ = owner.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != _HOST or pid == os.getpid():
        return False
    current = _start_ticks(pid)
    if current is not None:
        return start not in ("-", current)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

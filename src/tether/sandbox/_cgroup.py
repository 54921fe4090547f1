"""One cgroup per sandbox: a memory and process budget for everything in it, and a way to kill
all of it at once.

cgroup v2 is used when its root enables the ``memory`` and ``pids`` controllers (or, for a
runtime that is not root, when this process's own cgroup delegates them); otherwise cgroup v1
when both hierarchies are mounted (hybrid machines, such as the ones CI runs on, have only v1
controllers). Sandboxes' cgroups live under a parent of Tether's own, ``tether/`` at the top of
each hierarchy: the runtime's own cgroup belongs to whoever started it (a service manager, a
container runtime), and writing children into it was the first approach, rejected. Tether
writes only to cgroups it created, and removes them when the sandbox ends.

A cgroup's name carries its runtime's pid namespace, pid and start time, so a runtime that was
killed before it could remove its cgroups leaves them recognisably orphaned: ``sweep`` (run when
a sandbox starts up) kills what is left in them and removes them. Only cgroups of runtimes in
this pid namespace are judged: another container's pids mean nothing here.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tether.errors import SandboxError

_names = itertools.count()
_PARENT = "tether"
_NAME = re.compile(r"tether-sandbox-(\d+)-(\d+)-(\d+)-\d+")


@dataclass(frozen=True, slots=True)
class CgroupSupport:
    """Where sandboxes' cgroups go on this machine: one parent directory per hierarchy."""

    version: int
    """1 or 2."""
    memory_parent: Path
    pids_parent: Path


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as lines:
        for line in lines:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                found.append((fields[4], rest[0], set(rest[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per controller ("" is the v2 hierarchy)."""
    paths = {}
    with open("/proc/self/cgroup", encoding="utf-8") as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _usable(parent: Path) -> bool:
    return parent.is_dir() and os.access(parent, os.W_OK)


def _delegates(cgroup: Path) -> bool:
    """Whether a v2 cgroup passes the memory and pids controllers to its children."""
    try:
        enabled = (cgroup / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return {"memory", "pids"} <= set(enabled)


def _own_parent(root: Path, *, version: int) -> Path | None:
    """``root/tether``, created (with v2's controllers passed on) when missing; None when
    this process may not."""
    if not _usable(root):
        return None
    parent = root / _PARENT
    try:
        parent.mkdir(exist_ok=True)
        if version == 2 and not _delegates(parent):
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError:
        return None
    return parent


def find_cgroup_support() -> CgroupSupport | None:
    """The cgroup hierarchy sandboxes can use here, or None."""
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return None
    for point, kind, _ in mounts:
        if kind == "cgroup2" and "" in own:
            root = Path(point)
            if _delegates(root) and (parent := _own_parent(root, version=2)) is not None:
                return CgroupSupport(2, parent, parent)
            # A runtime that is not root: only the subtree delegated to it is writable.
            delegated = Path(point + own[""].rstrip("/"))
            if _delegates(delegated) and _usable(delegated):
                return CgroupSupport(2, delegated, delegated)
    v1: dict[str, Path | None] = {}
    for point, kind, options in mounts:
        for controller in ("memory", "pids"):
            if kind == "cgroup" and controller in options and controller in own:
                v1[controller] = _own_parent(Path(point), version=1)
    memory, pids = v1.get("memory"), v1.get("pids")
    if memory is not None and pids is not None:
        return CgroupSupport(1, memory, pids)
    return None


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks after boot; with the pid, names one process for
    good), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # The command name is in parentheses and may hold spaces; field 22 is the start.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def sweep(support: CgroupSupport) -> list[Path]:
    """Kill what is left in, and remove, the sandbox cgroups of runtimes that are gone;
    returns the cgroups removed."""
    removed = []
    for parent in dict.fromkeys([support.memory_parent, support.pids_parent]):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _NAME.fullmatch(name)
            if (match is None or int(match[1]) != _pid_namespace()
                    or start_time(int(match[2])) == int(match[3])):
                continue  # not a sandbox's, another namespace's, or its runtime still runs
            orphan = parent / name
            for _ in range(50):  # the killed need a moment to leave
                with contextlib.suppress(OSError):
                    for pid in (orphan / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    orphan.rmdir()
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)
                else:
                    removed.append(orphan)
                    break
    return removed


class Cgroup:
    """A sandbox's own cgroup (created by ``create``, removed by ``remove``)."""

    def __init__(self, support: CgroupSupport, *, memory_bytes: int, processes: int) -> None:
        pid = os.getpid()
        name = f"tether-sandbox-{_pid_namespace()}-{pid}-{start_time(pid)}-{next(_names)}"
        self.dirs = list(dict.fromkeys([support.memory_parent / name, support.pids_parent / name]))
        self.version = support.version
        try:
            for path in self.dirs:
                path.mkdir()
            memory, pids = support.memory_parent / name, support.pids_parent / name
            if self.version == 2:
                (memory / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(FileNotFoundError):  # no swap accounting
                    (memory / "memory.swap.max").write_text("0")
            else:
                (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(FileNotFoundError):  # swap accounting is off
                    (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (pids / "pids.max").write_text(str(processes))
        except OSError as exc:
            self.remove()
            raise SandboxError(f"could not set up the sandbox's cgroup: {exc}") from exc

    def add(self, pid: int) -> None:
        """Move a process (not yet running untrusted code) into the cgroup."""
        for path in self.dirs:
            (path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (a fork racing the sweep is caught next time)."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the cgroup; False while processes are still in it."""
        removed = True
        for path in self.dirs:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed

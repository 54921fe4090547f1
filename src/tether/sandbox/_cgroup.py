"""One cgroup per sandbox: a memory and process budget for everything in it, and a way to kill
all of it at once.

cgroup v2 is used when this process's cgroup delegates the ``memory`` and ``pids``
controllers; otherwise cgroup v1 when both hierarchies are mounted (hybrid machines, such as
the ones CI runs on, have only v1 controllers). The sandbox's cgroup is created *under this
process's own cgroup* in each hierarchy, so the runtime's own limits still hold; Tether writes
only to cgroups it created, and removes them when the sandbox ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tether.errors import SandboxError

_names = itertools.count()


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


def find_cgroup_support() -> CgroupSupport | None:
    """The cgroup hierarchy sandboxes can use here, or None."""
    try:
        mounts, own = _mounts(), _own_paths()
    except OSError:
        return None
    for point, kind, _ in mounts:
        if kind == "cgroup2" and "" in own:
            parent = Path(point + own[""].rstrip("/"))
            try:
                delegated = (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if {"memory", "pids"} <= set(delegated) and _usable(parent):
                return CgroupSupport(2, parent, parent)
    v1 = {}
    for point, kind, options in mounts:
        for controller in ("memory", "pids"):
            if kind == "cgroup" and controller in options and controller in own:
                v1[controller] = Path(point + own[controller].rstrip("/"))
    if len(v1) == 2 and all(_usable(p) for p in v1.values()):
        return CgroupSupport(1, v1["memory"], v1["pids"])
    return None


class Cgroup:
    """A sandbox's own cgroup (created by ``create``, removed by ``remove``)."""

    def __init__(self, support: CgroupSupport, *, memory_bytes: int, processes: int) -> None:
        name = f"tether-sandbox-{os.getpid()}-{next(_names)}"
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

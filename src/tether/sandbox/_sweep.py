"""What a killed runtime leaves behind, and how the next one clears it.

A runtime removes each sandbox's cgroup, workspace and proxy directory when the sandbox ends;
one that is SIGKILLed (or loses power) cannot. So every temporary directory a sandbox gets is
held under an exclusive ``flock`` while the sandbox lives, and at start-up a runtime removes
the ones nobody holds that are older than itself (a directory created after it started may
belong to a live runtime that is an instant from locking it). Cgroups carry their runtime's
pid and start time in their names instead (``_cgroup.sweep``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from tether.sandbox._cgroup import CgroupSupport, start_time
from tether.sandbox._cgroup import sweep as sweep_cgroups

PREFIXES = ("tether-workspace-", "tether-proxy-")
"""The temporary directories a sandbox gets (a fresh workspace, the proxy's socket)."""


def locked_temp_dir(prefix: str) -> tuple[Path, int]:
    """A new temporary directory and the descriptor holding its lock (closing it releases
    the lock; remove the directory first)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return path, fd


def _process_started_at() -> float:
    """This process's start as a wall-clock time (``time.time()`` scale); measured back from
    the uptime, since the boot time the kernel gives is whole seconds."""
    ticks = start_time(os.getpid())
    with open("/proc/uptime", encoding="ascii") as f:
        uptime = float(f.read().split()[0])
    now = time.time()
    if ticks is None:
        return now
    return now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def sweep_temp_dirs(owners: range) -> list[Path]:
    """Remove sandbox directories that no live runtime holds and that are older than this
    process; returns those removed. Only directories owned by this uid or a sandbox uid in
    ``owners`` qualify: anyone may create names in ``/tmp``."""
    root = Path(tempfile.gettempdir())
    # Start times are in clock ticks (10 ms), the uptime in hundredths: leave a margin.
    started = _process_started_at() - 0.1
    removed: list[Path] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIXES):
            continue
        path = root / name
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if (not stat.S_ISDIR(info.st_mode) or info.st_mtime >= started
                or (info.st_uid != os.geteuid() and info.st_uid not in owners)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live runtime's
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def sweep_leftovers(cgroup: CgroupSupport | None, owners: range) -> list[Path]:
    """Clear what killed runtimes left: their sandboxes' cgroups and temporary directories.
    A cgroup whose processes have not died yet is left for the next sweep."""
    removed = sweep_temp_dirs(owners)
    if cgroup is not None:
        with contextlib.suppress(OSError):
            removed += sweep_cgroups(cgroup)
    return removed

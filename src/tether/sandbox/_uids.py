"""Host uids for sandboxes (root runtimes): each live sandbox has one no other sandbox has.

A uid of its own means a sandbox cannot signal, ptrace or read the files of another, and
RLIMIT_NPROC counts its processes only. The first approach kept the uids in use per
``Sandbox`` object, starting at ``getpid() % count``: two objects in one process, or two
runtimes on one machine, could hand out the same uid at once. Now every uid in use is held
twice: in this process's table (shared by all its ``Sandbox`` objects and threads) and by an
exclusive ``flock`` on a file named after it in a directory only root can write, which other
runtimes on the machine respect and which the kernel drops when its holder dies, even by
SIGKILL. The lowest free uid is taken, so only as many lock files exist as sandboxes ever ran
at once.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

from tether.errors import SandboxError, SandboxUnsafe

UID_LOCKS = Path("/run/tether/sandbox-uids")
"""Where the uid locks live (``/run`` is a root-owned tmpfs: they vanish at boot)."""

# Invariant: a uid is a key here exactly while a sandbox of this process has it, and the
# value is the descriptor holding its lock file's flock.
_held: dict[int, int] = {}
_held_lock = threading.Lock()


def _lock_dir(path: Path) -> Path:
    """The lock directory, created when missing; refused unless only this uid can write it
    and the directory above it (else another user could hand out the locks)."""
    # Made one level at a time: with parents=True, mkdir gives the levels above it the
    # umask's mode, which could leave them writable by others.
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    for checked in (path, path.parent):
        info = os.lstat(checked)
        if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            raise SandboxUnsafe(f"{checked} must be a directory of uid {os.geteuid()} that no "
                                "one else can write: it holds the sandbox uid locks. "
                                "Remove it, and it is created as it should be")
    return path


class UidPool:
    """Hands out the host uids ``base`` to ``base + count - 1`` to sandboxes, each to one
    live sandbox on this machine at a time."""

    def __init__(self, base: int, count: int, lock_dir: Path = UID_LOCKS) -> None:
        self._base, self._count, self._lock_dir = base, count, lock_dir

    def take(self) -> int:
        """A uid no other sandbox (of any runtime here) has; ``give_back`` when it ends.

        Raises:
            SandboxError: every uid of the range is in use.
            SandboxUnsafe: the lock directory is writable by someone else.
        """
        directory = _lock_dir(self._lock_dir)
        with _held_lock:
            for uid in range(self._base, self._base + self._count):
                if uid in _held:
                    continue
                fd = os.open(directory / str(uid),
                             os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue  # another runtime's sandbox has it
                _held[uid] = fd
                return uid
        raise SandboxError(f"all {self._count} sandbox uids are in use on this machine; "
                           "raise [sandbox] uid_count")

    def give_back(self, uid: int) -> None:
        """Free a uid whose sandbox has ended (every process of it reaped)."""
        with _held_lock:
            fd = _held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # drops the flock

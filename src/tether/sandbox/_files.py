"""Host-side work on what a sandbox left in its workspace, never following its links.

The payload owns the workspace, so any name in it may be a symlink to a host file the runtime
(root, say) can read and the payload cannot. Every component is opened relative to the one
before with ``O_NOFOLLOW``, so a link anywhere on the path is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath

from tether.errors import SandboxError


def read_beneath(root: Path, relative: str, *, max_bytes: int = 1024**2) -> bytes:
    """The contents of the regular file ``root/relative`` (at most ``max_bytes``).

    Raises:
        SandboxError: the path leaves ``root``, passes through a link, or is not a regular
            file.
    """
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise SandboxError(f"{relative!r} is not a path inside the workspace")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | flags)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | flags, dir_fd=fd)
    except OSError as exc:
        raise SandboxError(f"workspace file {relative!r} cannot be read safely: "
                           f"{exc.strerror} (links are never followed)") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise SandboxError(f"workspace file {relative!r} is not a regular file")
        with os.fdopen(file_fd, "rb", closefd=False) as f:
            return f.read(max_bytes)
    finally:
        os.close(file_fd)


def hand_over(root: Path, uid: int) -> None:
    """Give everything under ``root`` to ``uid`` (a run's workspace, for its next sandbox).

    Links are changed themselves, never followed, and the walk never enters a linked
    directory, so a link an earlier payload planted cannot hand a host file over. No sandbox
    runs in the workspace meanwhile: the previous one was killed and reaped.
    """
    for directory, subdirs, files in os.walk(root, followlinks=False):
        for name in (*subdirs, *files):
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)

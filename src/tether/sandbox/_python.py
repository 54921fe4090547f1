"""The interpreter problem: which Python runs inside the sandbox.

Every sandbox starts a small Python program (``_inside.py``) before the payload, and
sandboxed tools run in Python. The runtime's own interpreter often cannot serve: as root it
may live in a home directory the sandbox's uid cannot enter (pyenv under ``/root``, which is
0700; measured: ``PermissionError`` on exec). So the sandbox uses, in order: the interpreter
named in ``[sandbox] python``; the runtime's interpreter when every directory above it is open
to others; a system interpreter of the same ``major.minor`` (``/usr/bin/python3.11``), whose
standard library is under ``/usr``. Extension modules built for that ``major.minor`` load in
either, so the runtime's installed distributions can be mounted read-only and imported
(``_imports.py`` decides which paths).
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from tether.errors import SandboxUnavailable


@dataclass(frozen=True, slots=True)
class SandboxPython:
    """An interpreter the sandbox uid can run, and the host directories it needs."""

    executable: str
    prefix: str
    """Mounted read-only when it is not under ``/usr`` already."""


def open_to_others(path: str) -> bool:
    """Whether a uid that is neither owner nor group can reach, read and run ``path``."""
    if os.geteuid() != 0:
        # The sandbox runs as this very uid when the runtime is not root.
        return os.access(path, os.R_OK)
    current = Path(path)
    try:
        mode = current.stat().st_mode
        # A directory needs read and search, an interpreter read and execute; a module file
        # only read.
        wanted = stat.S_IROTH | stat.S_IXOTH
        if stat.S_ISREG(mode) and not os.access(path, os.X_OK):
            wanted = stat.S_IROTH
        if mode & wanted != wanted:
            return False
        for parent in current.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _version_of(executable: str) -> str | None:
    name = Path(executable).name
    return name.removeprefix("python") if name.startswith("python3.") else None


def find_sandbox_python(configured: str | None = None) -> SandboxPython:
    """The interpreter sandboxes run on here.

    Raises:
        SandboxUnavailable: none is reachable by the sandbox's uid; says what to install.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    own = os.path.realpath(sys.executable)
    candidates: list[tuple[str, str]] = []
    if configured:
        candidates.append((configured, str(Path(configured).resolve().parent.parent)))
    else:
        candidates.append((own, sys.base_prefix))
        candidates += [(f"{prefix}/bin/python{version}", prefix)
                       for prefix in ("/usr", "/usr/local")]
    for executable, prefix in candidates:
        if not (os.path.isfile(executable) and open_to_others(executable)
                and open_to_others(prefix)):
            continue
        found = _version_of(os.path.realpath(executable))
        if executable != own and found not in (None, version):
            continue
        return SandboxPython(executable, prefix)
    if configured:
        raise SandboxUnavailable(
            f"[sandbox] python = {configured!r} is missing or not readable by other users; "
            "name an interpreter in a world-readable directory")
    raise SandboxUnavailable(
        f"no Python {version} the sandbox's uid can run: {own} is in a directory other users "
        f"cannot enter. Install one (apt-get install python{version}), or set [sandbox] python "
        "in tether.toml to an interpreter in a world-readable directory")

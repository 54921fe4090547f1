"""What a sandboxed worker may import: Tether, installed distributions and the tool's own
package, and nothing else of the host's.

The first approach mounted every readable directory of the runtime's ``sys.path``. But
``sys.path[0]`` is the directory of the runtime's script (the working directory under
``python -m``), and a project keeps its ``.env``, ``tether.toml`` and SQLite file (every
tenant's journal) exactly there; ``PYTHONPATH`` and an editable install's ``src/`` may hold as
much. Agent-written code in ``python_exec`` read them. So a worker now gets:

* Tether's own package directory (not the directory it sits in).
* Each site-packages directory on ``sys.path`` (one with ``*.dist-info`` in it), mounted whole
  when every entry in it belongs to an installed distribution, else only the entries that do.
  Whole when possible, because bubblewrap re-reads the mount table for every read-only bind:
  one bind per entry (200 here) added about 100 ms to each launch, measured. ``sys.path[0]``
  and the working directory are never taken for one, whatever they hold.
* For a tool of the project's own, the package holding its module: the top-level package, or
  under a namespace package the first regular package, or a top-level module's single file.
  ``python_exec`` and ``shell_exec`` live in Tether and need nothing more.

Paths are mounted read-only at the same place, so tracebacks name the host's files.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tether.errors import SandboxError
from tether.sandbox._python import open_to_others

_TETHER = Path(__file__).resolve().parents[1]
"""Tether's package directory (``.../tether``)."""


@dataclass(frozen=True, slots=True)
class Imports:
    """Host paths a worker mounts read-only, and its ``sys.path``."""

    mounts: tuple[str, ...] = ()
    path: tuple[str, ...] = ()

    def __add__(self, other: Imports) -> Imports:
        return Imports(_outermost([*self.mounts, *other.mounts]),
                       _in_runtime_order([*self.path, *other.path]))


def _outermost(paths: list[str]) -> tuple[str, ...]:
    """Each path once, parents first, without paths a mounted parent already shows."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path.startswith(parent + "/") for parent in kept):
            kept.append(path)
    return tuple(kept)


def _in_runtime_order(paths: list[str]) -> tuple[str, ...]:
    """Each entry once, in the order the runtime's ``sys.path`` has them (others last)."""
    order = {os.path.realpath(p): i for i, p in reversed(list(enumerate(sys.path))) if p}
    return tuple(sorted(dict.fromkeys(paths), key=lambda p: order.get(p, len(order))))


@functools.lru_cache(maxsize=64)
def _owned(directory: str, mtime_ns: int) -> frozenset[str]:
    """The top-level entries of a site-packages directory that installed distributions put
    there (``mtime_ns`` keys the cache: adding or removing an entry changes it)."""
    owned = {"__pycache__"}
    for dist in importlib.metadata.distributions(path=[directory]):
        for file in dist.files or ():
            if file.parts and file.parts[0] != "..":
                owned.add(file.parts[0])
    return frozenset(owned)


def _site_mounts(directory: str, listing: list[str]) -> list[str]:
    owned = _owned(directory, os.stat(directory).st_mtime_ns)
    mine = [name for name in listing if name in owned or name.endswith(".dist-info")]
    if len(mine) == len(listing):
        return [directory]
    # Something unrelated lies there: only what was installed, never the stray files.
    return [os.path.join(directory, name) for name in mine if not name.endswith(".pth")]


def worker_imports() -> Imports:
    """What every sandboxed worker imports from: Tether and the installed distributions.

    Raises:
        SandboxError: Tether itself is where the sandbox's uid cannot read it.
    """
    if not open_to_others(str(_TETHER)):
        raise SandboxError(f"Tether is installed at {_TETHER}, which other users cannot read, "
                           "so a sandboxed worker cannot import it; install it where they "
                           "can (every directory above it needs o+rx)")
    mounts, path = [str(_TETHER)], [str(_TETHER.parent)]
    start = sys.path[0] if sys.path and sys.path[0] else os.getcwd()
    never = {os.path.realpath(start), os.path.realpath(os.getcwd())}
    for entry in dict.fromkeys(os.path.realpath(p) for p in sys.path if p):
        if (entry in never or entry.startswith((sys.base_prefix + "/", "/usr/"))
                or not os.path.isdir(entry) or not open_to_others(entry)):
            continue
        try:
            listing = os.listdir(entry)
        except OSError:
            continue
        if any(name.endswith(".dist-info") for name in listing):
            mounts += _site_mounts(entry, listing)
            path.append(entry)
    return Imports(_outermost(mounts), _in_runtime_order(path))


def module_imports(module: str) -> Imports:
    """What a worker needs to import ``module`` beyond ``worker_imports()``: the package (or
    single file) holding it, when it is the project's own.

    Raises:
        SandboxError: the module cannot be found, or sits where the sandbox's uid cannot read.
    """
    parts = module.split(".")
    if parts[0] == _TETHER.name or parts[0] in sys.stdlib_module_names:
        return Imports()
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        try:
            spec = loaded.__spec__ if loaded is not None else importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise SandboxError(f"cannot find module {module!r} for a sandboxed call: "
                               f"{exc}") from exc
        if spec is None:
            raise SandboxError(f"cannot find module {name!r} for a sandboxed call")
        if not spec.has_location or spec.origin is None:
            continue  # a namespace package (or built in): the package below holds the code
        origin = Path(os.path.realpath(spec.origin))
        location = origin.parent if spec.submodule_search_locations else origin
        if location.name.split(".")[0] != parts[depth - 1] or len(location.parents) < depth:
            raise SandboxError(f"module {name!r} is loaded from {spec.origin}, which a "
                               "sandboxed worker cannot import from; install it as files")
        if not open_to_others(str(location)):
            raise SandboxError(f"module {name!r} is at {location}, which the sandbox's uid "
                               "cannot read; make it and every directory above it readable "
                               "by other users (o+rx), or move the tool elsewhere")
        return Imports((str(location),), (str(location.parents[depth - 1]),))
    return Imports()

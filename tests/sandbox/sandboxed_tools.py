"""Tools that run in the sandbox (imported by the sandboxed worker, so they live at the top
level of an importable module)."""

from __future__ import annotations

import os
import time

import tether


@tether.tool(sandbox="default")
def whoami(tag: str, call: tether.ToolContext) -> dict[str, object]:
    """Report where the tool runs."""
    previous = sorted(os.listdir("."))
    with open("mark", "w") as f:
        f.write(tag)
    return {"uid": os.getuid(), "cwd": os.getcwd(), "env": sorted(os.environ),
            "previous": previous, "key": call.idempotency_key, "pid": os.getpid()}


@tether.tool(sandbox="default")
def explode(message: str) -> None:
    """Raise."""
    raise ValueError(message)


@tether.tool(sandbox="default", timeout=1)
def hang() -> None:
    """Sleep past the timeout."""
    time.sleep(60)


@tether.tool(sandbox="default")
async def add(a: int, b: int) -> int:
    """Add, asynchronously."""
    return a + b


@tether.tool(sandbox="warm")
def ping() -> str:
    """Answer from a warm worker."""
    return "pong"


@tether.tool(sandbox="per-run")
def jot(line: str) -> dict[str, object]:
    """Append a line to the run's notes (in a nested directory) and read them all back."""
    os.makedirs("notes/deep", exist_ok=True)
    with open("notes/deep/lines.txt", "a") as f:
        f.write(line + "\n")
    with open("notes/deep/lines.txt") as f:
        return {"lines": f.read().split(), "uid": os.getuid()}


@tether.tool(sandbox="per-run")
def plant_links() -> None:
    """Leave links to host paths in the run's workspace for the next call's hand-over."""
    os.symlink("/etc/passwd", "passwd")
    os.symlink("/etc", "etc")

"""A tiny MCP server for the tests, on the official SDK: every ``append`` call adds a line to
the file named by ``NOTES_FILE``, so a test can count real calls across processes.

Run as ``python notes_server.py`` (stdio) or ``python notes_server.py http PORT``. With
``NOTES_PIDS`` set, each server process appends its pid there when it starts, so a test can
check that none outlives the process that launched it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer

app = MCPServer("notes")


@app.tool()
def append(text: str) -> str:
    """Append a line of text to the notes file."""
    path = Path(os.environ["NOTES_FILE"])
    with path.open("a", encoding="utf-8") as notes:
        notes.write(text + "\n")
    count = len(path.read_text(encoding="utf-8").splitlines())
    return f"noted {text!r} (line {count})"


@app.tool()
def refuse(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ValueError(reason)


@app.tool()
async def wait(seconds: float, ctx: Context) -> str:
    """Wait, reporting progress each tenth of the time."""
    for step in range(1, 11):
        await anyio.sleep(seconds / 10)
        await ctx.report_progress(step, 10, f"step {step}")
    return "waited"


@app.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    if "NOTES_PIDS" in os.environ:
        with open(os.environ["NOTES_PIDS"], "a", encoding="utf-8") as pids:
            pids.write(f"{os.getpid()}\n")
    if sys.argv[1:2] == ["http"]:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run("stdio")

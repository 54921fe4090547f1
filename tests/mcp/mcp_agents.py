"""Agents that write a note through an MCP server, for the end-to-end crash tests. The tests
run them in ``tether run`` and ``tether worker`` processes (``PYTHONPATH`` holds this
directory). ``scribe`` thinks with a ``ScriptedModel``; ``served_scribe`` with the model named
``scribe`` in the process's ``tether.toml`` (a real provider SDK against a scripted server).

``NOTES_FILE`` is the file the notes server appends to (one line per real call);
``NOTES_MODEL_LATENCY`` gives each model call a latency, so there is time to kill the process
between the MCP call and the final answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import tether
from tether.agents import ToolLoop
from tether.mcp import MCPServers, StdioServer
from tether.models import ToolSpec
from tether.testing import ScriptedModel
from tether.types import JSONObject, Reply, ToolCall

SERVERS = MCPServers([StdioServer(
    name="notes", command=sys.executable,
    args=(str(Path(__file__).resolve().with_name("notes_server.py")),),
    env=("NOTES_FILE", "NOTES_PIDS"))])
append = SERVERS.tool("notes", "append")


def script(messages: list[JSONObject], tools: list[ToolSpec]) -> Reply:
    """Ask for the note first; then answer with what the server said it did."""
    results = [message for message in messages if message.get("role") == "tool"]
    if not results:
        assert [tool.name for tool in tools] == ["append"]
        text = str(messages[-1]["content"]).removeprefix("note: ")
        return Reply(tool_calls=[ToolCall("append", {"text": text}, id="call-1")])
    outcome = json.loads(str(results[-1]["content"]))
    return Reply(text=f"Done: {outcome['result']}")


model = ScriptedModel(script, latency=float(os.environ.get("NOTES_MODEL_LATENCY", "0")))
loop = ToolLoop(model, tools=[append], system="You keep notes.")


@tether.agent(tools=[append], version="1")
async def scribe(ctx: tether.Context, request: str) -> str:
    await SERVERS.start()  # the model is offered the server's schema of `append`
    return await loop.run(ctx, request)


served_loop = ToolLoop("scribe", tools=[append], system="You keep notes.")


@tether.agent(tools=[append], version="1")
async def served_scribe(ctx: tether.Context, request: str) -> str:
    await SERVERS.start()
    return await served_loop.run(ctx, request)

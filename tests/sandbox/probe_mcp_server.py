"""A stdio MCP server that tries to get out: it reads files and opens connections on request
and reports what happened (standard library only, so it runs on the sandbox's system Python).
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from typing import Any

_STRING = {"type": "string"}
TOOLS = [
    {"name": "read_file", "description": "Read a file.",
     "inputSchema": {"type": "object", "properties": {"path": _STRING}, "required": ["path"]}},
    {"name": "connect", "description": "Open a TCP connection.",
     "inputSchema": {"type": "object", "properties": {"host": _STRING, "port": {"type": "integer"}},
                     "required": ["host", "port"]}},
]


def _outcome(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def call(name: str, args: dict[str, Any]) -> str:
    try:
        if name == "read_file":
            with open(args["path"]) as f:
                return "read: " + f.read()
        with socket.create_connection((args["host"], args["port"]), timeout=2):
            return "connected"
    except OSError as exc:
        return _outcome(exc)


def answer(message: dict[str, Any]) -> dict[str, Any]:
    method, params = message["method"], message.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "probe", "version": "1"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        text = call(params["name"], params.get("arguments") or {})
        return {"content": [{"type": "text", "text": text}]}
    return {}


for line in sys.stdin:
    message = json.loads(line)
    if "id" in message and "method" in message:
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": answer(message)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

"""Built-in tools that run agent-written code: ``python_exec`` and ``shell_exec``.

Both run in the ``default`` sandbox profile (no network, an empty environment, a fresh
workspace, CPU, memory, process and time limits). The function bodies below execute inside the
sandboxed worker, never in the runtime. To run them under another profile, wrap the function
again: ``Tool(python_exec.fn, sandbox="build")``.
"""

from __future__ import annotations

import subprocess
import sys

from tether.tools._tool import tool
from tether.types import JSONObject

_KEEP_BYTES = 64 * 1024


def _ran(argv: list[str]) -> JSONObject:
    done = subprocess.run(argv, capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return {"exit_code": done.returncode,
            "stdout": done.stdout[-_KEEP_BYTES:].decode(errors="replace"),
            "stderr": done.stderr[-_KEEP_BYTES:].decode(errors="replace")}


@tool(sandbox="default", side_effects=False)
def python_exec(code: str) -> JSONObject:
    """Run Python code in a sandbox (no network, a scratch /workspace) and return its exit
    code, stdout and stderr (the last 64 KiB of each).

    Args:
        code: a Python program; print what you want to see.
    """
    return _ran([sys.executable, "-I", "-c", code])


@tool(sandbox="default", side_effects=False)
def shell_exec(command: str) -> JSONObject:
    """Run a shell command in a sandbox (no network, a scratch /workspace) and return its exit
    code, stdout and stderr (the last 64 KiB of each).

    Args:
        command: a /bin/sh command line.
    """
    return _ran(["/bin/sh", "-c", command])

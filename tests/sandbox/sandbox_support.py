"""Helpers for sandbox tests: payloads as Python source, reports as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.sandbox import DEFAULT_PROFILE, Profile, Sandbox, SandboxResult

ESCAPE_OUTCOMES: dict[str, str] = {}
"""nodeid -> outcome of every test marked ``escape`` in this session (see conftest)."""


def profile(**changes: Any) -> Profile:
    """The default profile with some limits changed (short wall clocks keep tests fast)."""
    return DEFAULT_PROFILE.model_copy(update={"wall_seconds": 20.0, **changes})


async def run_python(sandbox: Sandbox, code: str, *, workspace: Path | None = None,
                     **changes: Any) -> SandboxResult:
    """Run ``ATTEMPT`` + ``code`` with the sandbox's ``python3``."""
    return await sandbox.run(["python3", "-c", ATTEMPT + code], profile=profile(**changes),
                             workspace=workspace)


def report(result: SandboxResult) -> dict[str, Any]:
    """The JSON object a payload printed last (payloads report what each attempt got)."""
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"no report; stderr: {result.stderr.decode()}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]


ATTEMPT = """
import errno, json, os, sys
def attempt(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
"""
"""Prelude for payloads: ``attempt(fn, ...)`` gives "ok" or the errno name."""

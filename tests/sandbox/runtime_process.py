"""A runtime process for tests that need more than one: it starts sandboxes, reports them as
one JSON line, and keeps them running until its stdin closes (or it is killed).

Usage: ``python runtime_process.py COUNT UID_BASE UID_COUNT [NETWORK_HOST]``.
"""

from __future__ import annotations

import json
import sys

import anyio

from tether.sandbox import Sandbox, sandbox_config
from tether.sandbox._launch import LaunchSpec, SandboxProcess


async def main(count: int, uid_base: int, uid_count: int, network: list[str]) -> None:
    table: dict[str, object] = {"uid_base": uid_base, "uid_count": uid_count}
    if network:
        table["profiles"] = {"held": {"network": network}}
    sandbox = Sandbox(sandbox_config(table))
    profile = sandbox.profile("held" if network else "default")
    held = [SandboxProcess(LaunchSpec(profile, "exec", ("sleep", "60")), sandbox.layers,
                           sandbox._uids) for _ in range(count)]
    try:
        async with anyio.create_task_group() as group:
            for process in held:
                await process.start()
                group.start_soon(process.run)
            print(json.dumps([{
                "pid": process.pid, "uid": process._uid, "workspace": str(process.workspace),
                "proxy_dir": str(process._proxy_dir) if process._proxy_dir else None,
                "cgroups": [str(d) for d in process._cgroup.dirs] if process._cgroup else [],
            } for process in held]), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)  # held until stdin closes
            group.cancel_scope.cancel()
    finally:
        for process in held:
            await process.aclose()


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])

"""``Sandbox``: the one object the rest of Tether talks to. It holds the profiles, probes the
machine once, hands out uids, runs commands, and runs tool functions in sandboxed workers,
from a warm pool when the profile keeps one.

A pooled worker is started (and checked) ahead of time, serves exactly one call and is then
destroyed, so no two calls (let alone two tenants) ever share a process, a workspace or a
uid. Workers import nothing of a tenant's before their call.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from tether import _json
from tether.errors import SandboxError
from tether.sandbox._launch import (
    LaunchSpec,
    SandboxProcess,
    SandboxResult,
    UidPool,
    run_sandboxed,
)
from tether.sandbox._probe import Layers, probe
from tether.sandbox._profile import Profile, SandboxConfig
from tether.types import JSON, JSONObject

logger = logging.getLogger("tether.sandbox")


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a sandboxed function call ended: its result, or its exception with the traceback
    text, or the sandbox's own account when the worker died before answering."""

    ok: bool
    result: JSON = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    process: SandboxResult | None = None

    @property
    def timed_out(self) -> bool:
        return self.process is not None and self.process.timed_out


class _Pool:
    """Started, checked workers of one profile, each waiting for its one call."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ready: collections.deque[SandboxProcess] = collections.deque()
        self.starting = 0


class Sandbox:
    """Runs commands and tool functions in sandboxes built from named profiles.

    Use as an async context manager to keep warm pools (their workers are started in the
    background and killed on exit); without it every call starts its sandbox cold.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._layers: Layers | None = None
        self._uids = UidPool(self.config.uid_base, self.config.uid_count)
        self._pools: dict[str, _Pool] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._own_group = False

    @property
    def layers(self) -> Layers:
        """What this machine offers (probed on first use)."""
        if self._layers is None:
            self._layers = probe(self.config.python)
        return self._layers

    def profile(self, name: str) -> Profile:
        return self.config.profile(name)

    async def __aenter__(self) -> Sandbox:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group, self._own_group = group, True
        return self

    def start_pools_in(self, group: anyio.abc.TaskGroup) -> None:
        """Refill warm pools in the caller's task group (a runtime lends its own); ``aclose``
        still kills the idle workers, the group's owner ends the refills."""
        self._group, self._own_group = group, False

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop refilling pools and kill every idle worker."""
        group, self._group = self._group, None
        if group is not None and self._own_group:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            for pool in self._pools.values():
                while pool.ready:
                    await pool.ready.popleft().aclose()
        self._pools.clear()

    async def run(self, argv: Sequence[str], *, profile: str | Profile = "default",
                  workspace: Path | None = None, timeout_seconds: float | None = None,
                  environ: Mapping[str, str] | None = None) -> SandboxResult:
        """Run a command in a sandbox; see ``SandboxResult`` for how it ended.

        Raises:
            SandboxUnavailable: the profile needs a layer this machine lacks.
            SandboxUnsafe: a sandbox process turned out privileged; nothing ran.
        """
        chosen = profile if isinstance(profile, Profile) else self.profile(profile)
        return await run_sandboxed(argv, chosen, self.layers, self._uids, workspace=workspace,
                                   timeout_seconds=timeout_seconds, environ=environ)

    def _call_spec(self, profile: Profile) -> LaunchSpec:
        self.layers.require(profile)
        python = self.layers.python
        assert python is not None
        return LaunchSpec(profile, "call", import_roots=python.import_roots,
                          environ=dict(os.environ))

    async def _start_pooled(self, profile: Profile, pool: _Pool) -> None:
        worker = SandboxProcess(self._call_spec(profile), self.layers, self._uids)
        try:
            await worker.start()
        except Exception as exc:  # noqa: BLE001  (logged; a pool must outlive a failed start)
            # The next call starts cold and reports the failure where someone sees it.
            logger.warning("could not start a warm sandbox worker (%s): %s", profile.name, exc)
            await worker.aclose()
            return
        except BaseException:
            await worker.aclose()
            raise
        finally:
            pool.starting -= 1
        pool.ready.append(worker)

    def _refill(self, profile: Profile) -> _Pool | None:
        if self._group is None or profile.warm_workers == 0:
            return None
        pool = self._pools.setdefault(profile.name, _Pool(profile.warm_workers))
        while len(pool.ready) + pool.starting < pool.size:
            pool.starting += 1
            self._group.start_soon(self._start_pooled, profile, pool)
        return pool

    async def warm(self, profile: str = "default") -> None:
        """Start the profile's warm workers now and wait until they are ready (inside
        ``async with`` only; a no-op for a profile without ``warm_workers``)."""
        chosen = self.profile(profile)
        if self._group is None or chosen.warm_workers == 0:
            return
        pool = self._pools.setdefault(chosen.name, _Pool(chosen.warm_workers))
        async with anyio.create_task_group() as group:
            while len(pool.ready) + pool.starting < pool.size:
                pool.starting += 1
                group.start_soon(self._start_pooled, chosen, pool)

    async def call(self, module: str, qualname: str, args: JSONObject, *,
                   profile: str = "default", context: JSONObject | None = None,
                   timeout_seconds: float | None = None) -> CallOutcome:
        """Call ``module.qualname(**args)`` in a sandboxed worker (a ``tether.Tool`` there is
        validated and gets ``context`` as its ``ToolContext``).

        Raises:
            SandboxUnavailable, SandboxUnsafe, SandboxError: the sandbox could not run it.
        """
        chosen = self.profile(profile)
        if module == "__main__" or "<locals>" in qualname:
            raise SandboxError(f"{module}.{qualname} cannot be imported by a sandboxed worker: "
                               "define sandboxed tools at the top level of an importable module")
        pool = self._refill(chosen)
        worker = pool.ready.popleft() if pool is not None and pool.ready else None
        request = _json.encode({"module": module, "qualname": qualname, "args": args,
                                "context": context}).encode()
        group = self._group
        try:
            if worker is None:
                worker = SandboxProcess(self._call_spec(chosen), self.layers, self._uids)
                await worker.start()
            # With a task group to hand the teardown to, answer as soon as the worker has.
            process, response = await worker.run(request, timeout_seconds=timeout_seconds,
                                                 until_answer=group is not None)
            if response and group is not None:
                group.start_soon(worker.aclose)
                worker = None
        finally:
            # Refilled after the call, so a starting worker does not compete with it for CPU.
            self._refill(chosen)
            if worker is not None:
                await worker.aclose()
        return _outcome(process, response)


def _outcome(process: SandboxResult, response: bytes) -> CallOutcome:
    if response:
        data: dict[str, Any] = _json.decode(response)
        if data.get("ok"):
            return CallOutcome(True, data.get("result"), process=process)
        return CallOutcome(False, error_type=str(data.get("error_type", "")),
                           message=str(data.get("message", "")),
                           traceback=str(data.get("traceback", "")), process=process)
    if process.timed_out:
        how = f"was killed when its time ran out ({process.duration_seconds:.1f} s)"
    elif process.signal:
        how = f"was killed by signal {process.signal} (a limit of its profile, or seccomp)"
    else:
        how = f"exited with status {process.exit_code} without answering"
    tail = process.stderr[-2000:].decode(errors="replace").strip()
    return CallOutcome(False, error_type="SandboxKilled" if not process.timed_out else "Timeout",
                       message=f"the sandboxed worker {how}" + (f": {tail}" if tail else ""),
                       process=process)

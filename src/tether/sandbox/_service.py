"""``Sandbox``: the one object the rest of Tether talks to. It holds the profiles, probes the
machine once, hands out uids, runs commands, and runs tool functions in sandboxed workers,
from a warm pool when the profile keeps one.

A pooled worker is started (and checked) ahead of time, serves exactly one call and is then
destroyed, so no two calls (let alone two tenants) ever share a process, a workspace or a
uid. Workers import nothing of a tenant's before their call. A worker sees only what its call
may import (``_imports.py``), so the pools of one profile are kept per tool package.

A profile with ``workspace = "run"`` keeps one workspace per run: a directory named by a hash
of the tenant and the run id under ``[sandbox] run_workspaces``, mounted into each of that
run's calls (each still a fresh process with a uid of its own) and removed by
``release_run`` when the run ends. Its name depends on nothing but the run, so a run resumed
by another process on the same machine finds it again; two tenants never share one, even
with the same run id.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from tether import _json
from tether.errors import SandboxError
from tether.sandbox._imports import Imports, module_imports, worker_imports
from tether.sandbox._launch import (
    LaunchSpec,
    SandboxProcess,
    SandboxResult,
    run_sandboxed,
)
from tether.sandbox._probe import Layers, probe
from tether.sandbox._profile import Profile, SandboxConfig
from tether.sandbox._sweep import sweep_leftovers
from tether.sandbox._uids import UidPool
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
        self._pools: dict[tuple[str, Imports], _Pool] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._own_group = False
        self._run_locks: dict[Path, anyio.Lock] = {}

    @property
    def layers(self) -> Layers:
        """What this machine offers (probed on first use)."""
        if self._layers is None:
            self._layers = probe(self.config.python)
            # Start-up: clear what runtimes killed before they could clean up left behind.
            swept = sweep_leftovers(self._layers.cgroup, range(
                self.config.uid_base, self.config.uid_base + self.config.uid_count))
            if swept:
                logger.info("removed %d sandbox leftovers of runtimes that were killed",
                            len(swept))
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

    @contextlib.asynccontextmanager
    async def open_process(self, argv: Sequence[str], *, profile: str | Profile = "default",
                           environ: Mapping[str, str] | None = None,
                           ) -> AsyncIterator[anyio.abc.Process]:
        """Start a long-lived command (an MCP stdio server) in a sandbox, its stdin, stdout and
        stderr left as pipes for the caller; everything in the sandbox is killed, and what was
        made for it removed, when the context ends. The wall clock does not run (the other
        limits do, CPU seconds included, over the whole life of the process).

        Raises:
            SandboxUnavailable, SandboxUnsafe, SandboxError: the sandbox could not start.
        """
        if not argv:
            raise SandboxError("no command to run")
        chosen = profile if isinstance(profile, Profile) else self.profile(profile)
        spec = LaunchSpec(chosen, "exec", tuple(argv), stdio=True,
                          environ=os.environ if environ is None else environ)
        sandbox = SandboxProcess(spec, self.layers, self._uids)
        try:
            await sandbox.start()
            yield await sandbox.go()
        finally:
            await sandbox.aclose()

    def run_workspace(self, tenant: str, run_id: str) -> Path:
        """The workspace of a run (``workspace = "run"`` profiles); created on first use."""
        root = Path(self.config.run_workspaces)
        # Open to others (names are digests), so a sandbox's uid can reach its workspace.
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        digest = hashlib.sha256(f"{tenant}\0{run_id}".encode()).hexdigest()[:32]
        path = root / digest
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        if path.is_symlink() or not path.is_dir():
            raise SandboxError(f"run workspace {path} is not a directory")
        return path

    @property
    def keeps_run_workspaces(self) -> bool:
        """Whether some profile keeps a workspace per run (``workspace = "run"``)."""
        return any(p.workspace == "run" for p in self.config.profiles.values())

    def release_run(self, tenant: str, run_id: str) -> None:
        """Remove a run's workspace (the run ended); nothing to do when it has none."""
        root = Path(self.config.run_workspaces)
        digest = hashlib.sha256(f"{tenant}\0{run_id}".encode()).hexdigest()[:32]
        shutil.rmtree(root / digest, ignore_errors=True)
        self._run_locks.pop(root / digest, None)

    def _call_spec(self, profile: Profile, imports: Imports,
                   workspace: Path | None = None) -> LaunchSpec:
        self.layers.require(profile)
        return LaunchSpec(profile, "call", imports=worker_imports() + imports,
                          environ=dict(os.environ), workspace=workspace,
                          reused_workspace=workspace is not None)

    async def _start_pooled(self, profile: Profile, imports: Imports, pool: _Pool) -> None:
        worker = SandboxProcess(self._call_spec(profile, imports), self.layers, self._uids)
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

    def _refill(self, profile: Profile, imports: Imports) -> _Pool | None:
        if self._group is None or profile.warm_workers == 0:
            return None
        pool = self._pools.setdefault((profile.name, imports), _Pool(profile.warm_workers))
        while len(pool.ready) + pool.starting < pool.size:
            pool.starting += 1
            self._group.start_soon(self._start_pooled, profile, imports, pool)
        return pool

    async def warm(self, profile: str = "default", module: str = "tether") -> None:
        """Start the profile's warm workers for tools of ``module`` (default: the built-in
        ones) now and wait until they are ready (inside ``async with`` only; a no-op for a
        profile without ``warm_workers``). Calls refill the pool of their own tool's package
        either way; this only saves the first call its cold start."""
        chosen = self.profile(profile)
        if self._group is None or chosen.warm_workers == 0:
            return
        imports = module_imports(module)
        pool = self._pools.setdefault((chosen.name, imports), _Pool(chosen.warm_workers))
        async with anyio.create_task_group() as group:
            while len(pool.ready) + pool.starting < pool.size:
                pool.starting += 1
                group.start_soon(self._start_pooled, chosen, imports, pool)

    async def call(self, module: str, qualname: str, args: JSONObject, *,
                   profile: str = "default", context: JSONObject | None = None,
                   timeout_seconds: float | None = None,
                   run: tuple[str, str] | None = None) -> CallOutcome:
        """Call ``module.qualname(**args)`` in a sandboxed worker (a ``tether.Tool`` there is
        validated and gets ``context`` as its ``ToolContext``). ``run`` is the (tenant, run
        id) the call belongs to, whose workspace a ``workspace = "run"`` profile mounts.

        Raises:
            SandboxUnavailable, SandboxUnsafe, SandboxError: the sandbox could not run it.
        """
        chosen = self.profile(profile)
        if module == "__main__" or "<locals>" in qualname:
            raise SandboxError(f"{module}.{qualname} cannot be imported by a sandboxed worker: "
                               "define sandboxed tools at the top level of an importable module")
        workspace = None
        if chosen.workspace == "run":
            if run is None:
                raise SandboxError(f"sandbox profile {chosen.name!r} keeps a workspace per run, "
                                   "but this call belongs to no run")
            workspace = self.run_workspace(*run)
        imports = module_imports(module)
        pool = self._refill(chosen, imports)
        worker = pool.ready.popleft() if pool is not None and pool.ready else None
        request = _json.encode({"module": module, "qualname": qualname, "args": args,
                                "context": context}).encode()
        # A run's calls take turns with its workspace, each torn down before the next starts
        # (the next one takes the workspace over with another uid).
        group = self._group if workspace is None else None
        lock = contextlib.nullcontext() if workspace is None else \
            self._run_locks.setdefault(workspace, anyio.Lock())
        async with lock:
            try:
                if worker is None:
                    worker = SandboxProcess(self._call_spec(chosen, imports, workspace),
                                            self.layers, self._uids)
                    await worker.start()
                # With a task group to hand the teardown to, answer as soon as the worker has.
                process, response = await worker.run(request, timeout_seconds=timeout_seconds,
                                                     until_answer=group is not None)
                if response and group is not None:
                    group.start_soon(worker.aclose)
                    worker = None
            finally:
                # Refilled after the call, so a starting worker does not compete with it for
                # CPU.
                self._refill(chosen, imports)
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

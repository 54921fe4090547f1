"""Starting one sandbox: the process backend, layer by layer, and tearing it down.

From the outside in::

    supervisor (this process: a cgroup of the sandbox's own, the wall clock, the kill)
      -> an unprivileged uid of the sandbox's own (``_uids.py``), set before bubblewrap starts
         (root runtimes)
        -> bubblewrap: every namespace unshared, no nested user namespaces, a root built from an
           allow-list (/usr read-only, a synthetic /etc, /tmp, the workspace), --clearenv,
           --new-session, --die-with-parent, and two seccomp filters (default deny)
          -> _inside.py: the bridge to the network proxy (allow-list profiles), Landlock,
             then "ready"
             [host: check every process's uid and capabilities from /proc, move them into the
              cgroup, set rlimits; refuse and kill on any doubt]
          -> "go": the payload (a command, or one call of a tool function)

A profile with a network allow-list adds a host-side proxy (``_proxy.py``) on a unix socket
mounted at ``/run/tether``; nothing else about the network changes.

Why the uid comes first: bubblewrap run as root keeps full capabilities, and even with
``--uid`` its user namespace maps the payload to host root (measured: a payload remounted ``/``
and wrote ``/etc`` on the host). Nothing runs as root below the supervisor.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from tether.errors import SandboxError, SandboxUnsafe
from tether.sandbox._cgroup import Cgroup
from tether.sandbox._files import hand_over
from tether.sandbox._imports import Imports
from tether.sandbox._probe import Layers
from tether.sandbox._profile import Profile
from tether.sandbox._proxy import NetworkProxy
from tether.sandbox._python import open_to_others
from tether.sandbox._seccomp import seccomp_fds
from tether.sandbox._sweep import locked_temp_dir
from tether.sandbox._uids import UidPool

WORKSPACE = "/workspace"
"""Where the workspace appears inside the sandbox (also the working directory and HOME)."""

_INSIDE_SOURCE = (Path(__file__).parent / "_inside.py").read_text(encoding="utf-8")
_SANDBOX_ID = 1000  # the payload's uid and gid as it sees them (host: its own uid)
_PASSWD = f"sandbox:x:{_SANDBOX_ID}:{_SANDBOX_ID}:sandbox:{WORKSPACE}:/bin/sh\n"
_GROUP = f"sandbox:x:{_SANDBOX_ID}:\n"
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKSPACE, "TMPDIR": "/tmp",  # noqa: S108
             "LANG": "C.UTF-8", "USER": "sandbox"}
SANDBOX_ENV = frozenset(_BASE_ENV)
"""Variables every sandbox gets with values of its own (a profile's ``env`` may override)."""
_STARTUP_SECONDS = 30.0
_PROXY_DIR = "/run/tether"
PROXY_PORT = 3128
"""Where the bridge to the network proxy listens inside a sandbox (its own ``127.0.0.1``)."""
_KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How a sandboxed command ended and what it printed (each stream capped)."""

    exit_code: int | None
    """The exit status; None when a signal ended it."""
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    """The wall clock ran out and the supervisor killed the sandbox."""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_seconds: float = 0.0

    @property
    def returncode(self) -> int:
        """As ``subprocess`` reports it: the exit status, or minus the signal."""
        return self.exit_code if self.exit_code is not None else -(self.signal or 0)

    def shell_status(self) -> int:
        """As a shell reports it: the exit status, 128 + signal, or 124 on a timeout."""
        if self.timed_out:
            return 124
        return self.exit_code if self.exit_code is not None else 128 + (self.signal or 0)


@dataclass(slots=True)
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    async def drain(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        if stream is None:
            return
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            async for chunk in stream:
                room = self.limit - len(self.data)
                if len(chunk) > room:
                    self.truncated = True
                self.data += chunk[:max(room, 0)]


async def _read_fd(fd: int, *, until_newline: bool = False) -> bytes:
    """Read a pipe end (non-blocking) to EOF, or to the first newline."""
    chunks = bytearray()
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return bytes(chunks)
        chunks += chunk
        if until_newline and b"\n" in chunk:
            return bytes(chunks)


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(fd)
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _data_fd(text: str) -> int:
    """A file descriptor to read ``text`` from (a memfd: unlike a pipe, any size fits)."""
    fd = os.memfd_create("tether-sandbox")
    try:
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tree(pid: int) -> list[int]:
    """A process and all its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    todo.extend(int(child) for child in f.read().split())
    return found


def check_unprivileged(pid: int) -> None:
    """Refuse a process that has host uid 0 in any of its uids, or any effective capability.

    Raises:
        SandboxUnsafe: naming the process and what it holds.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except OSError as exc:
        raise SandboxUnsafe(f"cannot check sandbox process {pid}: {exc}") from exc
    uids = [int(u) for u in status["Uid"].split()]
    caps = int(status["CapEff"].strip(), 16)
    if 0 in uids or caps:
        raise SandboxUnsafe(f"sandbox process {pid} ({status['Name'].strip()}) has uids {uids} "
                            f"and effective capabilities {caps:#x}; refusing to run it")


def _root_symlinks() -> list[str]:
    """Mirror the host's /bin, /lib, ... (symlinks into /usr on merged-/usr systems)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    return args


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One sandbox to start."""

    profile: Profile
    mode: str
    """``exec`` (run ``argv``) or ``call`` (serve one function call)."""
    argv: tuple[str, ...] = ()
    workspace: Path | None = None
    """A host directory to mount as the workspace; None: a fresh one, removed afterwards."""
    imports: Imports = field(default_factory=Imports)
    """What a ``call`` worker may import (mounted read-only; see ``_imports.py``)."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """Where the profile's ``env`` allow-list takes values from (the host environment)."""
    stdio: bool = False
    """Give the payload a stdin pipe and leave its pipes to the caller (a server)."""
    reused_workspace: bool = False
    """The workspace outlives this sandbox (a run's): everything in it, not only its top, is
    handed to this sandbox's uid, since an earlier sandbox of another uid wrote it."""


class SandboxProcess:
    """A started sandbox, waiting for its go. ``start`` builds it, ``run`` lets it go, and
    ``aclose`` (always called) kills whatever is left and removes what was made for it."""

    def __init__(self, spec: LaunchSpec, layers: Layers, uids: UidPool | None) -> None:
        self.spec, self._layers, self._uids = spec, layers, uids
        self.profile = spec.profile
        self._process: anyio.abc.Process | None = None
        self._cgroup: Cgroup | None = None
        self._uid: int | None = None
        self._workspace: Path | None = None
        self._own_workspace = False
        self._restore_owner: tuple[int, int] | None = None
        self._control_in = self._control_out = -1
        self._proxy: NetworkProxy | None = None
        self._proxy_dir: Path | None = None
        self._locks: list[int] = []
        """Descriptors holding the flocks of this sandbox's temporary directories."""
        self.landlock_abi = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def workspace(self) -> Path:
        assert self._workspace is not None, "start() sets the workspace"
        return self._workspace

    def _prepare_workspace(self) -> None:
        if self.spec.workspace is None:
            self._workspace, lock = locked_temp_dir("tether-workspace-")
            self._locks.append(lock)
            self._own_workspace = True
        else:
            self._workspace = self.spec.workspace.resolve()
            if not self._workspace.is_dir():
                raise SandboxError(f"workspace {self._workspace} is not a directory")
        if self._uid is not None:
            info = self._workspace.stat()
            if not self._own_workspace:
                self._restore_owner = (info.st_uid, info.st_gid)
            # Only the sandbox's uid may write there while it runs; its owner comes back after.
            if self.spec.reused_workspace:
                hand_over(self._workspace, self._uid)
            os.chown(self._workspace, self._uid, self._uid)
            os.chmod(self._workspace, 0o700)
        if not open_to_others(str(self._workspace.parent)):
            raise SandboxError(f"workspace {self._workspace} is inside a directory other users "
                               "cannot enter, so the sandbox's uid cannot mount it; choose "
                               "one elsewhere (for example under /tmp or /srv)")

    def _bwrap_argv(self, fds: dict[str, Any]) -> list[str]:
        profile, python = self.profile, self._layers.python
        assert python is not None
        assert self._layers.bwrap is not None
        argv = [self._layers.bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--clearenv",
                "--uid", str(_SANDBOX_ID), "--gid", str(_SANDBOX_ID), "--hostname", "sandbox",
                "--ro-bind", "/usr", "/usr", *_root_symlinks()]
        for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
            if os.path.exists(etc):
                argv += ["--ro-bind", etc, etc]
        argv += ["--ro-bind-data", str(fds["passwd"]), "/etc/passwd",
                 "--ro-bind-data", str(fds["group"]), "/etc/group",
                 "--proc", "/proc", "--dev", "/dev",
                 "--size", str(profile.memory_bytes), "--tmpfs", "/tmp",  # noqa: S108
                 "--bind", str(self.workspace), WORKSPACE, "--chdir", WORKSPACE]
        read_only = [python.prefix] if not python.prefix.startswith("/usr") else []
        if self.spec.mode == "call":
            read_only += list(self.spec.imports.mounts)
        for path in dict.fromkeys([*read_only, *profile.read_only]):
            argv += ["--ro-bind", path, path]
        for path in profile.writable:
            argv += ["--bind", path, path]
        for key, value in _BASE_ENV.items():
            argv += ["--setenv", key, value]
        bridge = None
        if self._proxy_dir is not None:
            argv += ["--ro-bind", str(self._proxy_dir), _PROXY_DIR]
            bridge = {"port": PROXY_PORT, "socket": f"{_PROXY_DIR}/proxy.sock"}
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                        "all_proxy"):
                argv += ["--setenv", key, proxy]
        for fd in fds["seccomp"]:
            argv += ["--add-seccomp-fd", str(fd)]
        config = {"mode": self.spec.mode, "argv": list(self.spec.argv),
                  "import_roots": list(self.spec.imports.path),
                  # The profile's values may be secrets: never on a command line, which every
                  # local user can read in /proc; _inside.py sets them (environ is 0400).
                  "env": {k: self.spec.environ[k] for k in profile.env
                          if k in self.spec.environ},
                  "control_in": fds["control_in"], "control_out": fds["control_out"],
                  "rlimits": self._limits(), "bridge": bridge,
                  "landlock": self._landlock_rules() if self._use_landlock() else None}
        fds["config"] = _data_fd(json.dumps(config))
        return [*argv, "--", python.executable, "-I", "-S", "-c", _INSIDE_SOURCE,
                str(fds["config"])]

    def _use_landlock(self) -> bool:
        return self.profile.landlock != "off" and self._layers.landlock_abi > 0

    def _landlock_rules(self) -> dict[str, list[Any]]:
        # bubblewrap already built the root from an allow-list, so everything in it may be
        # read; Landlock adds that only /tmp, the workspace and the profile's writable paths
        # take writes, and (ABI 4 and 6) no TCP but to the proxy bridge, no abstract sockets,
        # no signals outside.
        return {"read": ["/"], "write": ["/tmp", WORKSPACE, *self.profile.writable],  # noqa: S108
                "device": ["/dev"],
                "connect_ports": [PROXY_PORT] if self._proxy_dir is not None else []}

    def _start_proxy(self) -> None:
        if self.profile.network == "none":
            return
        self._proxy_dir, lock = locked_temp_dir("tether-proxy-")
        self._locks.append(lock)
        if self._uid is not None:
            # bubblewrap runs as the sandbox's uid and must reach the directory to mount it.
            os.chown(self._proxy_dir, self._uid, self._uid)
        self._proxy = NetworkProxy(self.profile.network, self._proxy_dir, uid=self._uid)

    @property
    def proxy(self) -> NetworkProxy | None:
        """The sandbox's network proxy (profiles with a network allow-list)."""
        return self._proxy

    async def start(self) -> None:
        """Start the sandbox up to its go, checked and contained; raises and cleans up on any
        failure."""
        self._layers.require(self.profile)
        if self._layers.root:
            assert self._uids is not None
            self._uid = self._uids.take()
        self._prepare_workspace()
        self._start_proxy()
        if self._layers.cgroup is not None:
            self._cgroup = Cgroup(self._layers.cgroup, memory_bytes=self.profile.memory_bytes,
                                  processes=self.profile.processes)
        child_in, self._control_in = os.pipe()
        self._control_out, child_out = os.pipe()
        fds: dict[str, Any] = {"control_in": child_in, "control_out": child_out,
                               "passwd": _data_fd(_PASSWD), "group": _data_fd(_GROUP),
                               "seccomp": seccomp_fds(tcp=self._proxy is not None)}
        passed = [child_in, child_out, fds["passwd"], fds["group"], *fds["seccomp"]]
        try:
            os.set_blocking(self._control_in, False)
            os.set_blocking(self._control_out, False)
            ids: dict[str, Any] = {}
            if self._uid is not None:
                ids = {"user": self._uid, "group": self._uid, "extra_groups": []}
            argv = self._bwrap_argv(fds)
            passed.append(fds["config"])
            self._process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE if self.spec.stdio else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=passed, start_new_session=True, env={}, **ids)
        finally:
            for fd in passed:
                os.close(fd)
        await self._handshake()

    async def _handshake(self) -> None:
        assert self._process is not None
        with anyio.move_on_after(_STARTUP_SECONDS):
            ready = await _read_fd(self._control_out, until_newline=True)
        if not ready.endswith(b"\n"):
            stderr = b""
            if self._process.stderr is not None:
                with anyio.move_on_after(1):
                    stderr = await self._process.stderr.receive(65536)
            raise SandboxError("the sandbox did not start: "
                               + (stderr.decode(errors="replace").strip() or "no output"))
        self.landlock_abi = int(json.loads(ready)["landlock_abi"])
        if self.profile.landlock == "required" and not self.landlock_abi:
            raise SandboxUnsafe("landlock = 'required' but Landlock was not applied")
        tree = _tree(self._process.pid)
        for pid in tree:
            check_unprivileged(pid)
            if self._cgroup is not None:
                self._cgroup.add(pid)
        # bubblewrap and its init come first; then _inside.py (the payload-to-be) and the
        # proxy bridge it may have started, which set their own limits.
        for pid in tree[2:]:
            self._check_limits(pid)

    def _limits(self) -> dict[str, int]:
        """The rlimits the payload starts under (``_inside.py`` sets them on itself: lowering
        another process's limits needs CAP_SYS_RESOURCE, which a root runtime may lack)."""
        profile = self.profile
        limits = {"RLIMIT_CPU": profile.cpu_seconds, "RLIMIT_FSIZE": profile.file_size_bytes,
                  "RLIMIT_NOFILE": profile.open_files, "RLIMIT_CORE": 0}
        if self._uid is not None:
            # Counted per uid, and each sandbox has its own: a fence behind the pids cgroup.
            limits["RLIMIT_NPROC"] = profile.processes
        if self._cgroup is None:
            limits["RLIMIT_AS"] = profile.memory_bytes
        return limits

    def _check_limits(self, pid: int) -> None:
        """Read the payload's limits back from the host before it may go."""
        names = {"RLIMIT_CPU": "Max cpu time", "RLIMIT_FSIZE": "Max file size",
                 "RLIMIT_NOFILE": "Max open files", "RLIMIT_CORE": "Max core file size",
                 "RLIMIT_NPROC": "Max processes", "RLIMIT_AS": "Max address space"}
        with open(f"/proc/{pid}/limits", encoding="ascii") as f:
            table = {line[:26].strip(): line[26:].split() for line in f.read().splitlines()[1:]}
        for kind, value in self._limits().items():
            soft = table.get(names[kind], ["?"])[0]
            if soft != str(value):
                raise SandboxUnsafe(f"sandbox process {pid} has {names[kind]} {soft}, "
                                    f"not {value}; refusing to run it")

    async def run(self, request: bytes = b"{}", *, timeout_seconds: float | None = None,
                  until_answer: bool = False) -> tuple[SandboxResult, bytes]:
        """Let the payload go and wait for it (at most the profile's wall time, or
        ``timeout_seconds`` when shorter). Returns the result and what the payload wrote
        on the control channel (a call's response). ``until_answer``: return as soon as a
        response is complete, without waiting for the exit (``aclose`` still reaps it)."""
        process = self._process
        assert process is not None, "start() first"
        wall = min(self.profile.wall_seconds, timeout_seconds or math.inf)
        out, err = _Capture(self.profile.output_bytes), _Capture(self.profile.output_bytes)
        response = b""
        started = time.monotonic()
        timed_out = False

        async def collect() -> None:
            nonlocal response
            async with anyio.create_task_group() as group:
                group.start_soon(out.drain, process.stdout)
                group.start_soon(err.drain, process.stderr)
                response = await _read_fd(self._control_out)
                if response and until_answer:
                    group.cancel_scope.cancel()
                    return
            await process.wait()

        with anyio.move_on_after(wall) as scope:
            await _write_fd(self._control_in, request)
            os.close(self._control_in)
            self._control_in = -1
            await collect()
        if scope.cancelled_caught:
            timed_out = True
            self.kill()
            with anyio.move_on_after(_KILL_GRACE_SECONDS):
                await process.wait()
        code = process.returncode
        if code is not None and 128 < code < 128 + signal.NSIG:
            # bubblewrap reports a payload killed by signal N as exit status 128 + N, as a
            # shell does (a payload exiting with such a status reads the same).
            code = 128 - code
        result = SandboxResult(
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            stdout=bytes(out.data), stderr=bytes(err.data), timed_out=timed_out,
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            duration_seconds=time.monotonic() - started)
        return result, response

    async def go(self) -> anyio.abc.Process:
        """Let a ``stdio`` payload go and hand over its process: the caller owns its pipes
        and ``aclose`` (no wall clock: a server runs until it is closed)."""
        assert self._process is not None, "start() first"
        assert self.spec.stdio, "only a stdio spec hands over its process"
        os.close(self._control_in)
        self._control_in = -1
        return self._process

    def kill(self) -> None:
        """SIGKILL everything in the sandbox (a stopped or traced process too)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
        if self._cgroup is not None:
            self._cgroup.kill()

    async def aclose(self) -> None:
        """Kill what is left, wait for it, and remove the cgroup and a temporary workspace."""
        with anyio.CancelScope(shield=True):
            self.kill()
            if self._process is not None:
                with anyio.move_on_after(_KILL_GRACE_SECONDS):
                    await self._process.wait()
                await self._process.aclose()
            for fd in (self._control_in, self._control_out):
                if fd >= 0:
                    os.close(fd)
            self._control_in = self._control_out = -1
            if self._cgroup is not None:
                for _ in range(100):
                    if self._cgroup.remove():
                        break
                    self._cgroup.kill()
                    await anyio.sleep(0.02)
            if self._proxy is not None:
                await anyio.to_thread.run_sync(self._proxy.close)
                self._proxy = None
            if self._proxy_dir is not None:
                shutil.rmtree(self._proxy_dir, ignore_errors=True)
                self._proxy_dir = None
            self._release_workspace()

    def _release_workspace(self) -> None:
        if self._workspace is not None:
            if self._own_workspace:
                shutil.rmtree(self._workspace, ignore_errors=True)
            elif self._restore_owner is not None:
                with contextlib.suppress(OSError):
                    os.chown(self._workspace, *self._restore_owner)
        # Removed first, unlocked after: a sweeping runtime never sees one half-removed.
        for lock in self._locks:
            os.close(lock)
        self._locks.clear()
        if self._uid is not None and self._uids is not None:
            self._uids.give_back(self._uid)
            self._uid = None


async def run_sandboxed(argv: Sequence[str], profile: Profile, layers: Layers, uids: UidPool,
                        *, workspace: Path | None = None,
                        timeout_seconds: float | None = None,
                        environ: Mapping[str, str] | None = None) -> SandboxResult:
    """Run a command in a sandbox and wait for it.

    Raises:
        SandboxUnavailable: the profile needs a layer this machine lacks.
        SandboxUnsafe: a sandbox process turned out privileged; nothing ran.
        SandboxError: the sandbox could not be set up.
    """
    if not argv:
        raise SandboxError("no command to run")
    spec = LaunchSpec(profile, "exec", tuple(argv), workspace,
                      environ=os.environ if environ is None else environ)
    sandbox = SandboxProcess(spec, layers, uids)
    try:
        await sandbox.start()
        result, _ = await sandbox.run(timeout_seconds=timeout_seconds)
        return result
    finally:
        await sandbox.aclose()


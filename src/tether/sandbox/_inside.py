"""The first program inside every sandbox (standard library only; the host passes this file's
text to ``python -I -S -c``, so the sandbox needs no copy of Tether to start). Its one argument
is a file descriptor to read its configuration from: the profile's environment values are in
it, and on a command line every local user could read them in ``/proc/PID/cmdline``.

It applies Landlock (and, for a profile with a network allow-list, first starts the bridge to
the host's proxy), tells the host it is ready, and waits. The host meanwhile checks the
sandbox's processes from outside (uid, capabilities), moves them into the cgroup and sets
their rlimits; only then does it send the request, and only then does untrusted code run:
``exec`` replaces this program with the payload command, ``call`` runs one function of a
tool module and writes its result back (a worker serves one call, then exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import socket
import sys
from typing import Any

# Landlock (linux/landlock.h). Rights a newer ABI added are only asked for when the kernel
# has that ABI, or the kernel refuses the whole ruleset.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2


class _NetPort(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def apply_landlock(read: list[str], write: list[str], device: list[str],
                   connect_ports: list[int]) -> int:
    """Restrict this process (and what it starts) to the given trees; returns the ABI used
    (0: the kernel has no Landlock). No TCP but connecting to ``connect_ports``, no abstract
    unix sockets or signals outside."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi <= 0:
        return 0
    handled = _FS_RIGHTS_BY_ABI[max(v for v in _FS_RIGHTS_BY_ABI if v <= abi)]
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4:
        attr.net, size = _NET_BIND_TCP | _NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL, 24
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    read_only = _EXECUTE | _READ_FILE | _READ_DIR
    grants = ([(p, read_only) for p in read] + [(p, handled) for p in write]
              + [(p, read_only | _WRITE_FILE | (_IOCTL_DEV & handled)) for p in device])
    for path, rights in grants:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if not os.path.isdir(f"/proc/self/fd/{fd}"):
                rights &= _FILE_ONLY  # directory rights on a file: EINVAL
            rule = _PathBeneath(rights & handled, fd)
            if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule),
                            ctypes.c_uint32(0)) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule {path} failed")
        finally:
            os.close(fd)
    for port in connect_ports if abi >= 4 else []:
        net_rule = _NetPort(_NET_CONNECT_TCP, port)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_NET_PORT, ctypes.byref(net_rule),
                        ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule port {port} failed")
    if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)
    return int(abi)


def open_bridge(port: int) -> socket.socket:
    """The bridge's listener on ``127.0.0.1:port`` of the sandbox's own network namespace
    (bound before Landlock, which then refuses every other bind)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def relay(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction of a connection until it ends (the host's proxy uses it too)."""
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def serve_bridge(listener: socket.socket, proxy: str) -> None:
    """Carry each connection to the host's proxy socket (a child process of its own: it
    outlives the exec of the payload and ends with the sandbox's pid namespace)."""
    import threading

    def pair(client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            try:
                upstream.connect(proxy)
            except OSError:
                return
            back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
            back.start()
            relay(client, upstream)
            back.join()

    while True:
        client, _ = listener.accept()
        threading.Thread(target=pair, args=(client,), daemon=True).start()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _call(request: dict[str, Any]) -> bytes:
    """Run one function of a tool module; its result or its exception as JSON."""
    import asyncio
    import importlib
    import inspect
    import traceback

    from tether import _json

    # Looked up by name: this runs inside the sandbox as the worker, not as a library import
    # (the sandbox package sits below the tools package).
    tools = importlib.import_module("tether.tools")
    try:
        target: Any = importlib.import_module(request["module"])
        for part in request["qualname"].split("."):
            target = getattr(target, part)
        args = request["args"]
        if isinstance(target, tools.Tool):
            kwargs = target.validate(args)
            if target.context_param is not None and request.get("context"):
                kwargs[target.context_param] = tools.ToolContext(**request["context"])
            result = target.fn(**kwargs)
        else:
            result = target(**args)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return _json.encode({"ok": True, "result": result}).encode()
    except BaseException as exc:  # noqa: BLE001  (all of it goes back as the tool's error)
        return _json.encode({"ok": False, "error_type": type(exc).__name__,
                             "message": str(exc),
                             "traceback": traceback.format_exc()}).encode()


async def _awaited(value: Any) -> Any:
    return await value


def main(config: dict[str, Any]) -> None:
    control_in, control_out = config["control_in"], config["control_out"]
    os.environ.update(config["env"])  # the payload's (an exec'd command's, a call's children)
    for name, value in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if config["mode"] == "call":
        sys.path[:0] = config["import_roots"]
        # Loaded now, before the request, so a call pays only for its own module.
        for name in ("asyncio", "importlib", "inspect", "traceback", "tether._json",
                     "tether.tools"):
            __import__(name)
    bridge = config["bridge"]
    listener = open_bridge(bridge["port"]) if bridge else None
    landlock = config["landlock"]
    abi = apply_landlock(landlock["read"], landlock["write"], landlock["device"],
                         landlock["connect_ports"]) if landlock else 0
    if listener is not None:
        if os.fork() == 0:
            os.close(control_in)
            os.close(control_out)
            try:
                serve_bridge(listener, bridge["socket"])
            finally:
                os._exit(1)
        listener.close()
    _write_all(control_out, json.dumps({"ready": True, "landlock_abi": abi}).encode() + b"\n")
    request = _read_all(control_in)  # the host's go: nothing untrusted ran before this
    os.close(control_in)
    if config["mode"] == "call":
        _write_all(control_out, _call(json.loads(request)))
        os.close(control_out)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(control_out)
    argv = config["argv"]
    try:
        os.execvp(argv[0], argv)  # noqa: S606  (the payload, inside the sandbox)
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot run {argv[0]!r}: {exc.strerror}\n")
        sys.stderr.flush()
        os._exit(127 if exc.errno == errno.ENOENT else 126)


if __name__ == "__main__":
    _config_fd = int(sys.argv[1])
    _config = json.loads(_read_all(_config_fd))
    os.close(_config_fd)
    main(_config)

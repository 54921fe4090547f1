"""The real MCP servers the tests talk to, and how to start, find and stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers import node_bin
from tether.mcp import HTTPServer, StdioServer

HERE = Path(__file__).resolve().parent
NOTES_SERVER = HERE / "notes_server.py"
VENV_BIN = Path(sys.executable).parent


def venv_bin(name: str) -> str:
    """A server installed in the virtualenv with the dev extras (``mcp-server-time``, ...)."""
    path = VENV_BIN / name
    if not path.exists():
        from peers import missing
        missing(f"{path} not installed: `pip install -e '.[dev]'` (make test does)")
    return str(path)


def everything_stdio(**options: Any) -> StdioServer:
    """The reference server of every MCP feature, over stdio. It is a ``#!/usr/bin/env node``
    script, so it needs PATH: the one variable it is allowed."""
    return StdioServer(**{"name": "everything", "command": str(node_bin("mcp-server-everything")),
                          "args": ("stdio",), "env": ("PATH",), **options})


def notes_stdio(**options: Any) -> StdioServer:
    """The tests' own server (``notes_server.py``): appends a line to ``NOTES_FILE`` per call."""
    return StdioServer(**{"name": "notes", "command": sys.executable,
                          "args": (str(NOTES_SERVER),), "env": ("NOTES_FILE",), **options})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class HTTPPeer:
    """A server process this test started, listening on ``url``."""

    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.argv} did not listen on {self.port}: "
                                         f"{self.log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server's process group and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def everything_http(log_dir: Path) -> Iterator[HTTPPeer]:
    """``PORT=<free> mcp-server-everything streamableHttp``, stopped by pid afterwards."""
    port = free_port()
    peer = HTTPPeer([str(node_bin("mcp-server-everything")), "streamableHttp"],
                    {**os.environ, "PORT": str(port)}, port, log_dir / "everything-http.log")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def http_config(peer: HTTPPeer, **options: Any) -> HTTPServer:
    return HTTPServer(name="everything", url=peer.url, **options)

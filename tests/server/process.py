"""A real ``tether serve`` process on loopback, for the end-to-end and browser tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
AGENTS = ["greeter", "chatty", "stepper", "waiter", "patient", "support"]


@dataclass
class ServerProcess:
    popen: subprocess.Popen[bytes]
    url: str
    key: str
    """A key of alice in tenant acme."""
    stderr_path: Path
    directory: Path

    def stop(self) -> int:
        """SIGTERM, then wait for a clean exit (SIGKILL after 15 s); returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def tether(*args: str, cwd: Path, config: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "tether"] + (["--config", str(config)] if config else [])
    return subprocess.run([*base, *args], cwd=cwd, env={**_env(), **(env or {})},
                          capture_output=True, text=True, timeout=60, check=False)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({"TETHER_POLL_INTERVAL_SECONDS": "0.05", "TETHER_FLUSH_INTERVAL_MS": "5",
                "TETHER_TENANT": "acme", "TETHER_PRINCIPAL": "alice"})
    return env


def start_server(directory: Path, *, config: Path | None = None,
                 extra: tuple[str, ...] = ()) -> ServerProcess:
    """``tether serve --port 0`` with the test agents; waits until it prints its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{directory / 'tether.db'}"
    keys_args = [] if config else ["--api-keys", str(directory / "keys.json")]
    issued = tether("--db", db, "keys", "issue", "alice", "--tenant", "acme", *keys_args,
                    cwd=directory, config=config)
    assert issued.returncode == 0, issued.stderr
    stderr_path = directory / "serve.stderr"
    base = [sys.executable, "-m", "tether"] + (["--config", str(config)] if config else [])
    agent_args = [arg for name in AGENTS for arg in ("--agent", f"server_agents:{name}")]
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen([*base, "--db", db, "serve", "--port", "0", *keys_args,
                                  *agent_args, *extra],
                                 cwd=directory, env=_env(), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"tether serve on (http://\S+)", stderr_path.read_text(errors="replace"))
        if found:
            return ServerProcess(popen, found.group(1), issued.stdout.strip(), stderr_path,
                                 directory)
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    popen.kill()
    popen.wait(timeout=10)
    raise AssertionError(f"tether serve did not start: {stderr_path.read_text()}")

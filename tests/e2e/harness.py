"""Starting, watching, killing and reaping real processes for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from tether.config import Settings
from tether.store import Record

from . import crash_agents

# The directory to put on PYTHONPATH so a worker process imports ``crash_agents`` under the
# same module name as this process did (agent refs and versions come from that name).
IMPORT_ROOT = Path(crash_agents.__file__).resolve().parents[crash_agents.__name__.count(".")]
POLL_SECONDS = 0.01


def child_env(log_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process: no stray TETHER_* settings, fast polls."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TETHER_", "E2E_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(IMPORT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({"E2E_DIR": str(log_dir), "TETHER_POLL_INTERVAL_SECONDS": "0.05",
                "TETHER_FLUSH_INTERVAL_MS": "5", "TETHER_MEMORY_SLEEP_SECONDS": "0"})
    env.update(extra)
    return env


def fast_settings(db: str, **changes: Any) -> Settings:
    """In-process runtimes: the same timing as ``child_env`` gives worker processes."""
    return Settings(db=db, poll_interval_seconds=0.05, flush_interval_ms=5,
                    memory_sleep_seconds=0, **changes)


@dataclass
class Child:
    """A process this test started; its output goes to files (a full pipe would block it)."""

    popen: subprocess.Popen[bytes]
    args: list[str]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"{' '.join(self.args[1:])} (pid {self.pid}, exit {self.returncode})\n"
                f"stdout: {self.stdout()[-2000:]}\nstderr: {self.stderr()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL and reap, so the pid is gone (not a zombie) when this returns."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a worker's graceful stop), reap, and return the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not stop within {timeout} s of SIGTERM: "
                                 f"{self.describe()}") from None

    async def finished(self, timeout: float = 60) -> int:
        """Wait (without blocking the event loop) until the process exits."""
        with anyio.move_on_after(timeout):
            while self.popen.poll() is None:
                await anyio.sleep(POLL_SECONDS)
        if self.popen.poll() is None:
            self.kill()
            raise AssertionError(f"still running after {timeout} s: {self.describe()}")
        return self.popen.wait()


@dataclass
class Processes:
    """Every process a test starts; ``stop_all`` (a fixture finalizer) stops and reaps them."""

    directory: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, args: list[str], env: dict[str, str]) -> Child:
        number = len(self.children)
        out, err = self.directory / f"proc-{number}.out", self.directory / f"proc-{number}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            popen = subprocess.Popen(args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                     env=env, cwd=self.directory, start_new_session=True)
        child = Child(popen, args, out, err)
        self.children.append(child)
        return child

    def tether(self, db_url: str, *args: str, env: dict[str, str]) -> Child:
        """Start ``python -m tether --db URL ARGS...``."""
        return self.spawn([sys.executable, "-m", "tether", "--db", db_url, *args], env)

    async def run_tether(self, db_url: str, *args: str, env: dict[str, str],
                         timeout: float = 60) -> Child:
        """Run a ``tether`` command to its end."""
        child = self.tether(db_url, *args, env=env)
        await child.finished(timeout)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


async def wait_until(condition: Callable[[], Awaitable[bool]], *, what: str,
                     child: Child | None = None, timeout: float = 30) -> None:
    """Poll ``condition``; fail if ``child`` exits first or ``timeout`` passes."""
    with anyio.move_on_after(timeout):
        while not await condition():
            if child is not None and child.returncode is not None:
                raise AssertionError(f"the worker exited before {what}: {child.describe()}")
            await anyio.sleep(POLL_SECONDS)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f": {child.describe()}" if child is not None else ""))


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def executions(log_dir: Path) -> list[dict[str, Any]]:
    """Every real execution logged by ``crash_agents`` in ``log_dir``, in order."""
    return read_lines(log_dir / crash_agents.EXECUTIONS)


def execution_counts(log_dir: Path) -> Counter[str]:
    return Counter(line["what"] for line in executions(log_dir))


def is_held(log_dir: Path, point: str) -> bool:
    return (log_dir / f"held-{point}").exists()


def effect_names(records: list[Record]) -> dict[int, str]:
    """For each journal seq, the name ``crash_agents`` logs a real execution of it under
    (sleeps, waits and clock reads execute nothing and are left out)."""
    names: dict[int, str] = {}
    llm_calls = 0
    for record in records:
        if record.kind == "llm":
            names[record.seq] = f"llm:{llm_calls}"
            llm_calls += 1
        elif record.kind in ("tool", "step"):
            names[record.seq] = f"{record.kind}:{record.name}"
    return names


def shape(records: list[Record]) -> list[tuple[int, str, str, str]]:
    return [(r.seq, r.kind, r.name, r.state) for r in records]

"""What every benchmark script shares: statistics, JSON output, the machine, child processes.

Each script prints one JSON object per line and per measurement::

    {"benchmark": "b1_steps", "case": "memory/async-read", "metric": "cpu_us_per_step",
     "unit": "us", "median": 41.2, "min": 40.1, "max": 44.0, "q1": 40.6, "q3": 42.9, "n": 5,
     "target": "<= 30", "meets_target": false, "ratio": 3.1, "ratio_to": "plain loop", ...}

``ratio`` compares the case with a baseline measured *in the same run* (the machine is shared
and noisy, so only same-run ratios are comparable between runs). Child processes are started
in their own session and their whole group is killed if they overrun, so nothing outlives a
benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
STRACE = "/usr/bin/strace"
GNU_TIME = "/usr/bin/time"
DEFAULT_REPS = 5


# -- statistics --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Stats:
    """Median and spread of repeated measurements."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no measurements")
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), ordered[0], ordered[-1], q1, q3, len(ordered))


def paired_ratio(values: Sequence[float], baselines: Sequence[float]) -> float | None:
    """Median of the per-repetition ratios value/baseline (pairs measured back to back)."""
    ratios = [v / b for v, b in zip(values, baselines, strict=True) if b > 0]
    return statistics.median(ratios) if ratios else None


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    if value == 0 or abs(value) >= 100:
        return round(value, 1)
    return float(f"{value:.4g}")


def check_target(value: float, target: str | None) -> bool | None:
    """``target`` is ``"<= X"`` or ``">= X"``; None when there is no target."""
    if target is None:
        return None
    match = re.fullmatch(r"\s*(<=|>=)\s*([0-9.]+)\s*", target)
    if match is None:
        raise ValueError(f"bad target {target!r}")
    bound = float(match.group(2))
    return value <= bound if match.group(1) == "<=" else value >= bound


def emit(benchmark: str, case: str, metric: str, unit: str, values: Sequence[float] | None, *,
         target: str | None = None, ratio: float | None = None, ratio_to: str | None = None,
         note: str | None = None, **extra: Any) -> dict[str, Any]:
    """Print one measurement as a JSON line (``values`` None: not measurable here, "n/a")."""
    line: dict[str, Any] = {"benchmark": benchmark, "case": case, "metric": metric, "unit": unit}
    if values:
        stats = Stats.of(values)
        line.update(median=_round(stats.median), min=_round(stats.min), max=_round(stats.max),
                    q1=_round(stats.q1), q3=_round(stats.q3), n=stats.n,
                    meets_target=check_target(stats.median, target))
    else:
        line.update(median=None, n=0, meets_target=None)
        note = "n/a: " + (note or "not measurable on this machine")
    line.update(target=target, ratio=_round(ratio), ratio_to=ratio_to, note=note, **extra)
    print(json.dumps(line), flush=True)
    return line


def log(message: str) -> None:
    """Progress for people, on stderr (stdout carries only JSON lines)."""
    print(message, file=sys.stderr, flush=True)


# -- the machine -------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor() or "unknown",
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")}


def stop_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the children we started (they
    run in sessions of their own and would not get the signal)."""
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def base_parser(description: str) -> argparse.ArgumentParser:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"repetitions of each measurement (default {DEFAULT_REPS})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where database files go (default: a fresh temporary directory "
                             "on the system temp filesystem; it is removed afterwards)")
    return parser


@contextmanager
def work_dir(parent: Path | None) -> Iterator[Path]:
    """A fresh directory for database files, removed afterwards."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="tether-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + str(path.resolve())


# -- child processes ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def check(self, what: str) -> ChildResult:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited with {self.returncode}:\n{self.stderr[-3000:]}")
        return self


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for children: benchmark agents importable, no stray TETHER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def kill_group(process: subprocess.Popen[Any], grace_seconds: float = 5) -> None:
    """Stop a child started with ``start_new_session=True`` and its process group: SIGTERM
    first (our scripts then stop their own children), SIGKILL after ``grace_seconds``."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 10.0)):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            return


def run_child(argv: Sequence[str], *, timeout: float = 600, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> ChildResult:
    """Run a command to completion in its own session; kill its group if it overruns."""
    start = time.perf_counter()
    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=cwd, env=env if env is not None else bench_env(),
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        kill_group(process)
        raise
    return ChildResult(process.returncode, stdout, stderr, time.perf_counter() - start)


def python_child(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


def with_time(argv: Sequence[str]) -> list[str] | None:
    """``argv`` under ``/usr/bin/time -v`` (None when GNU time is missing)."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    return [GNU_TIME, "-v", *argv]


def max_rss_mb(stderr: str) -> float | None:
    """Peak RSS that ``/usr/bin/time -v`` reported, in MB (10^6 bytes)."""
    found = _MAX_RSS.findall(stderr)
    return int(found[-1]) * 1024 / 1e6 if found else None


def strace_available() -> bool:
    if not os.access(STRACE, os.X_OK):
        return False
    with suppress(OSError, subprocess.SubprocessError):
        probe = subprocess.run([STRACE, "-f", "-qq", "-c", "-o", os.devnull, "-e", "trace=fsync",
                                "true"], capture_output=True, timeout=30)
        return probe.returncode == 0
    return False


def count_fsyncs(argv: Sequence[str], *, timeout: float = 600,
                 env: dict[str, str] | None = None) -> tuple[int, ChildResult]:
    """Run ``argv`` under ``strace -f -c`` and count its fsync and fdatasync calls."""
    with tempfile.NamedTemporaryFile(prefix="tether-strace-", suffix=".txt", delete=False) as f:
        summary = Path(f.name)
    try:
        # --seccomp-bpf stops the child only at the traced calls, so the rest runs at speed.
        prefix = [STRACE, "-f", "-qq", "-c", "-o", str(summary), "-e", "trace=fsync,fdatasync"]
        result = run_child([*prefix, "--seccomp-bpf", *argv], timeout=timeout, env=env)
        if result.returncode != 0 and "seccomp" in result.stderr:
            result = run_child([*prefix, *argv], timeout=timeout, env=env)
        result.check("strace child")
        return parse_strace_summary(summary.read_text()), result
    finally:
        summary.unlink(missing_ok=True)


def parse_strace_summary(text: str) -> int:
    """Sum the ``calls`` column of the fsync and fdatasync rows of an ``strace -c`` table."""
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync") and parts[3].isdigit():
            total += int(parts[3])
    return total


def rss_mb(pid: int) -> float | None:
    """A live process's resident set size now, in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s*(\d+)\s*kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 / 1e6 if match else None

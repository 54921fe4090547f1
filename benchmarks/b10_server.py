"""B10: the HTTP server. A ``tether serve`` process (SQLite, power durability, API keys) on
loopback; a load generator in this process.

* start-run: N requests (default 2,000) of ``POST /v1/runs`` for a one-step agent, from C
  concurrent connections (default 32). Reported: requests per second (first request to last
  response) and the p50 and p99 of each request's latency (the run is created durably and
  started before the response).
* fan-out: S subscribers (default 1,000) follow one run's event stream; the run waits for a
  signal, then takes 5 steps. Reported: the time from the signal to the last subscriber
  reading the ``end`` event, with 1 subscriber measured in the same repetition as the ratio's
  baseline.
* key check: ``APIKeys.verify`` of a valid key against a file of 100 keys, as the server does
  for every request (the parsed file cached until it changes), against reading and parsing
  the file on every check (what it did before), measured in the same repetition.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx

import tether
from bench_common import base_parser, emit, log, sqlite_url, work_dir
from tether.governance import APIKeys

BENCH = "b10_server"
HERE = Path(__file__).resolve().parent


@tether.agent(name="hello", version="1")
async def hello(ctx: tether.Context, name: str) -> str:
    return await ctx.step("greet", lambda: f"hello {name}")


@tether.agent(name="broadcast", version="1")
async def broadcast(ctx: tether.Context) -> int:
    await ctx.wait("go")
    for i in range(5):
        await ctx.step(f"step-{i}", lambda i=i: i)
    return 5


def tether_cli(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "tether", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    db = sqlite_url(directory / "tether.db")
    keys = str(directory / "keys.json")
    key = tether_cli("--db", db, "keys", "issue", "bench", "--tenant", "bench", "--api-keys",
                     keys, cwd=HERE)
    stderr_path = directory / "serve.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tether", "--db", db, "serve", "--port", "0",
             "--api-keys", keys, "--agent", "b10_server:hello", "--agent",
             "b10_server:broadcast"], cwd=HERE, env=env, stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"tether serve on (http://\S+)", stderr_path.read_text())
        if found:
            return popen, found.group(1), key
        time.sleep(0.05)
    popen.kill()
    raise SystemExit(f"tether serve did not start: {stderr_path.read_text()}")


async def start_runs(url: str, key: str, count: int, concurrency: int,
                     ) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 limits=limits, timeout=60) as client:
        remaining = iter(range(count))

        async def worker() -> None:
            for i in remaining:
                began = time.perf_counter()
                response = await client.post("/v1/runs", json={"agent": "hello",
                                                               "input": {"name": str(i)}})
                latencies.append(time.perf_counter() - began)
                assert response.status_code == 201, response.text

        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(worker)
        return count / (time.perf_counter() - began), latencies


async def fan_out(url: str, key: str, subscribers: int, run_id: str) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=subscribers + 10)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(60, read=None)) as client:
        await client.post("/v1/runs", json={"agent": "broadcast", "run_id": run_id})
        ready = 0
        all_ready = anyio.Event()
        finished: list[float] = []

        async def follow() -> None:
            nonlocal ready
            async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
                counted = False
                async for line in response.aiter_lines():
                    if not counted and line.startswith("event: run"):
                        ready, counted = ready + 1, True
                        if ready == subscribers:
                            all_ready.set()
                    if line.startswith("event: end"):
                        finished.append(time.perf_counter())
                        return

        async with anyio.create_task_group() as group:
            for _ in range(subscribers):
                group.start_soon(follow)
            with anyio.fail_after(120):
                await all_ready.wait()
            signalled = time.perf_counter()
            await client.post(f"/v1/runs/{run_id}/signals", json={"name": "go"})
        assert len(finished) == subscribers
        return max(finished) - signalled


def key_checks(directory: Path, checks: int = 20_000) -> tuple[float, float]:
    """Microseconds per ``verify``: cached, and with the file read every time."""
    path = directory / "bench-keys.json"
    keys = APIKeys(path)
    key = keys.issue("bench", "bench")
    for i in range(99):
        keys.issue(f"p{i}", "bench")
    settled = time.time() - 60  # past the window in which a changed file is read every time
    os.utime(path, (settled, settled))
    assert keys.verify(key) is not None
    began = time.perf_counter()
    for _ in range(checks):
        keys.verify(key)
    cached = (time.perf_counter() - began) / checks * 1e6
    began = time.perf_counter()
    for _ in range(checks // 10):
        APIKeys(path).verify(key)  # a fresh instance has nothing cached: reads the file
    reading = (time.perf_counter() - began) / (checks // 10) * 1e6
    return cached, reading


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    rates: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    fan: list[float] = []
    single: list[float] = []
    cached: list[float] = []
    reading: list[float] = []
    with work_dir(args.dir) as directory:
        for _ in range(args.reps):
            with_cache, without = key_checks(directory)
            cached.append(with_cache)
            reading.append(without)
        popen, url, key = start_server(directory)
        try:
            for rep in range(args.reps):
                rate, latencies = anyio.run(start_runs, url, key, args.requests,
                                            args.concurrency)
                ordered = sorted(latencies)
                rates.append(rate)
                p50s.append(statistics.median(ordered) * 1000)
                p99s.append(ordered[int(len(ordered) * 0.99) - 1] * 1000)
                single.append(anyio.run(fan_out, url, key, 1, f"one-{rep}") * 1000)
                fan.append(anyio.run(fan_out, url, key, args.subscribers, f"many-{rep}") * 1000)
                log(f"rep {rep + 1}: {rate:.0f} starts/s, p99 {p99s[-1]:.1f} ms; fan-out "
                    f"{args.subscribers}: {fan[-1]:.0f} ms, 1: {single[-1]:.0f} ms")
        finally:
            os.killpg(popen.pid, signal.SIGTERM)
            popen.wait(timeout=30)
    case = f"{args.requests} starts, {args.concurrency} connections"
    emit(BENCH, case, "start-run throughput", "requests/s", rates)
    emit(BENCH, case, "start-run latency p50", "ms", p50s)
    emit(BENCH, case, "start-run latency p99", "ms", p99s)
    emit(BENCH, "API key check, 100 keys in the file", "APIKeys.verify", "us", cached,
         ratio=statistics.median(c / r for c, r in zip(cached, reading, strict=True)),
         ratio_to=f"reading the file each time ({statistics.median(reading):.1f} us), "
                  "same repetition")
    emit(BENCH, f"{args.subscribers} SSE subscribers", "signal to last end event", "ms", fan,
         ratio=statistics.median(f / s for f, s in zip(fan, single, strict=True)),
         ratio_to="1 subscriber, same repetition")


if __name__ == "__main__":
    main()

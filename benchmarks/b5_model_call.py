"""B5: what Tether adds to a model call. The same scripted server (aimock's ``llmock`` on
127.0.0.1, ``tests/providers/fixtures``) answers three callers, each making ``--calls`` calls of
the same prompt, one after the other, for both SDKs:

* raw: the official SDK's async client, called directly (retries off, as Tether sets it);
* provider: Tether's model object (``model.complete``): message conversion, the retry loop,
  usage and cost;
* runtime: ``ctx.llm`` in one run on ``memory://`` and on SQLite (durability ``power``): the
  pipeline, the journal record and, on SQLite, its lazy commit.

Reported: wall time per call, and the CPU time this process spends per call (all its
threads, the SQLite writer's included; the server runs in its own process, so this is the
client's cost alone and far steadier than wall time on a shared machine). The overhead is the
CPU time per call minus the raw call's in the same repetition, in microseconds (the callers
take turns within each repetition).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import tether
from bench_common import (
    BENCH_DIR,
    base_parser,
    emit,
    kill_group,
    log,
    paired_ratio,
    sqlite_url,
    work_dir,
)
from tether.models import ModelConfig, ModelRequest, build_model

BENCH = "b5_model_call"
ROOT = BENCH_DIR.parent
LLMOCK = ROOT / "node_modules" / ".bin" / "llmock"
FIXTURES = ROOT / "tests" / "providers" / "fixtures"
KEY = "bench-key"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
MESSAGES = [{"role": "user", "content": "hello"}]


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(LLMOCK), "--host", "127.0.0.1", "--port", str(port), "--fixtures", str(FIXTURES),
         "--log-level", "silent", "--journal-max", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/__aimock/journal", timeout=1).close()  # noqa: S310
            return process, url
        except urllib.error.HTTPError:
            return process, url
        except OSError:
            time.sleep(0.05)
    kill_group(process)
    raise SystemExit("llmock did not start")


def config(provider: str, url: str) -> ModelConfig:
    return ModelConfig(provider=provider, model=MODELS[provider],  # type: ignore[arg-type]
                       base_url=f"{url}/v1" if provider == "openai" else url,
                       api_key_env="B5_MODEL_KEY", timeout=30)


def raw_caller(provider: str, url: str) -> tuple[Callable[[], Awaitable[Any]], Any]:
    if provider == "openai":
        import openai

        oa = openai.AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0, timeout=30)
        return (lambda: oa.chat.completions.create(model=MODELS[provider], messages=MESSAGES)), oa
    import anthropic

    an = anthropic.AsyncAnthropic(api_key=KEY, base_url=url, max_retries=0, timeout=30)
    return (lambda: an.messages.create(model=MODELS[provider], messages=MESSAGES,
                                       max_tokens=4096)), an


async def timed(calls: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall, CPU) microseconds per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return ((time.perf_counter() - wall) / calls * 1e6,
            (time.process_time() - cpu) / calls * 1e6)


@tether.agent(name="b5")
async def caller(ctx: tether.Context, calls: int) -> int:
    for _ in range(calls):
        await ctx.llm("model", MESSAGES)
    return calls


async def through_runtime(db: str, model_config: ModelConfig, calls: int,
                          ) -> tuple[float, float]:
    settings = tether.Settings(db=db)
    async with tether.Runtime(settings=settings, models={"model": model_config}) as rt:
        await rt.run(caller, {"calls": 2})  # connect the client and warm up
        return await timed(1, lambda: rt.run(caller, {"calls": calls}))


async def measure(provider: str, url: str, calls: int, reps: int, directory: Path,
                  ) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {
        "raw": [], "provider": [], "memory": [], "sqlite": []}
    raw, client = raw_caller(provider, url)
    model = build_model("model", config(provider, url))
    request = ModelRequest(MESSAGES)
    try:
        await timed(20, raw)  # warm the connection pools and imports
        await timed(20, lambda: model.complete(request))
        for rep in range(reps):
            results["raw"].append(await timed(calls, raw))
            results["provider"].append(await timed(calls, lambda: model.complete(request)))
            memory = await through_runtime("memory://", config(provider, url), calls)
            results["memory"].append((memory[0] / calls, memory[1] / calls))
            sqlite = await through_runtime(sqlite_url(directory / f"{provider}-{rep}.db"),
                                           config(provider, url), calls)
            results["sqlite"].append((sqlite[0] / calls, sqlite[1] / calls))
            log(f"b5 {provider} rep {rep + 1}: " + ", ".join(
                f"{name} {values[-1][0]:.0f} us wall, {values[-1][1]:.0f} us CPU"
                for name, values in results.items()))
    finally:
        await client.close()
        await model.aclose()
    return results


def main() -> None:
    parser = base_parser(__doc__ or BENCH)
    parser.add_argument("--calls", type=int, default=300, help="calls per measurement")
    args = parser.parse_args()
    if not LLMOCK.exists():
        emit(BENCH, "all", "overhead_us_per_call", "us", None,
             note=f"{LLMOCK} is missing: run `npm ci`")
        return
    os.environ["B5_MODEL_KEY"] = KEY
    process, url = start_server()
    try:
        with work_dir(args.dir) as directory:
            for provider in MODELS:
                results = anyio.run(measure, provider, url, args.calls, args.reps, directory)
                raw = results["raw"]
                for case, label in (("raw", "the SDK's async client alone"),
                                    ("provider", "model.complete"),
                                    ("memory", "ctx.llm, memory://"),
                                    ("sqlite", "ctx.llm, SQLite power")):
                    wall = [w for w, _ in results[case]]
                    cpu = [c for _, c in results[case]]
                    emit(BENCH, f"{provider}/{case}", "wall_us_per_call", "us", wall, note=label)
                    emit(BENCH, f"{provider}/{case}", "cpu_us_per_call", "us", cpu, note=label,
                         ratio=paired_ratio(cpu, [c for _, c in raw]),
                         ratio_to="raw SDK call, same repetition")
                    if case != "raw":
                        emit(BENCH, f"{provider}/{case}", "overhead_cpu_us_per_call", "us",
                             [c - r for c, (_, r) in zip(cpu, raw, strict=True)], note=label,
                             ratio_to="raw SDK call, same repetition")
    finally:
        kill_group(process)


if __name__ == "__main__":
    sys.exit(main())

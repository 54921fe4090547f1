"""B6: what Tether adds to an MCP tool call. The reference server
(``node_modules/.bin/mcp-server-everything stdio``) answers ``echo`` to four callers, each making
``--calls`` calls one after the other:

* raw: the official SDK alone (``stdio_client`` + ``ClientSession.call_tool``);
* connection: Tether's session holder (``ServerConnection.call``) and the result conversion,
  without the runtime;
* runtime: ``ctx.tool`` of a read-only MCP tool in one run, on ``memory://`` and on SQLite
  (durability ``power``): the pipeline, schema validation, the journal record and, on SQLite,
  its lazy commit.

Each caller talks to its own server process (the same program). Reported: wall time per call,
and this process's CPU time per call (all threads; the server runs elsewhere, so this is the
client's cost alone, far steadier than wall time on a shared machine). The overhead is the CPU
time per call minus the raw call's in the same repetition, in microseconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import tether
from bench_common import BENCH_DIR, base_parser, emit, log, paired_ratio, sqlite_url, work_dir
from tether.mcp import MCPServers, StdioServer
from tether.mcp._tool import result_value

BENCH = "b6_mcp_call"
EVERYTHING = BENCH_DIR.parent / "node_modules" / ".bin" / "mcp-server-everything"
ARGS = {"message": "hello"}


def server() -> StdioServer:
    return StdioServer(name="everything", command=str(EVERYTHING), args=("stdio",),
                       env=("PATH",), side_effects=False)


async def timed(calls: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall, CPU) microseconds per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return ((time.perf_counter() - wall) / calls * 1e6,
            (time.process_time() - cpu) / calls * 1e6)


def echo_agent(servers: MCPServers) -> tether.Agent:
    echo = servers.tool("everything", "echo")

    @tether.agent(name="b6", tools=[echo])
    async def caller(ctx: tether.Context, calls: int) -> int:
        for _ in range(calls):
            await ctx.tool("echo", ARGS)
        return calls
    return caller


async def through_runtime(db: str, agent: tether.Agent, calls: int) -> tuple[float, float]:
    async with tether.Runtime(settings=tether.Settings(db=db)) as rt:
        await rt.run(agent, {"calls": 2})  # warm up
        wall, cpu = await timed(1, lambda: rt.run(agent, {"calls": calls}))
    return wall / calls, cpu / calls


async def measure(calls: int, reps: int, directory: Path) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {
        "raw": [], "connection": [], "memory": [], "sqlite": []}
    params = StdioServerParameters(command=str(EVERYTHING), args=["stdio"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session, \
            MCPServers([server()]) as servers:
        await session.initialize()
        connection = servers.connection("everything")
        agent = echo_agent(servers)

        async def raw() -> Any:
            return await session.call_tool("echo", ARGS)

        async def held() -> Any:
            return result_value(await connection.call("echo", "echo", ARGS, None))

        await timed(50, raw)  # warm up both servers and the imports
        await timed(50, held)
        for rep in range(reps):
            results["raw"].append(await timed(calls, raw))
            results["connection"].append(await timed(calls, held))
            results["memory"].append(await through_runtime("memory://", agent, calls))
            results["sqlite"].append(await through_runtime(
                sqlite_url(directory / f"b6-{rep}.db"), agent, calls))
            log(f"b6 rep {rep + 1}: " + ", ".join(
                f"{name} {values[-1][0]:.0f} us wall, {values[-1][1]:.0f} us CPU"
                for name, values in results.items()))
    return results


def main() -> None:
    parser = base_parser(__doc__ or BENCH)
    parser.add_argument("--calls", type=int, default=300, help="calls per measurement")
    args = parser.parse_args()
    if not EVERYTHING.exists():
        emit(BENCH, "all", "overhead_cpu_us_per_call", "us", None,
             note=f"{EVERYTHING} is missing: run `npm ci`")
        return
    with work_dir(args.dir) as directory:
        results = anyio.run(measure, args.calls, args.reps, directory)
    raw = results["raw"]
    for case, label in (("raw", "the SDK's ClientSession.call_tool alone"),
                        ("connection", "ServerConnection.call + result conversion"),
                        ("memory", "ctx.tool, memory://"),
                        ("sqlite", "ctx.tool, SQLite power")):
        wall = [w for w, _ in results[case]]
        cpu = [c for _, c in results[case]]
        emit(BENCH, case, "wall_us_per_call", "us", wall, note=label)
        emit(BENCH, case, "cpu_us_per_call", "us", cpu, note=label,
             ratio=paired_ratio(cpu, [c for _, c in raw]), ratio_to="raw SDK call, same repetition")
        if case != "raw":
            emit(BENCH, case, "overhead_cpu_us_per_call", "us",
                 [c - r for c, (_, r) in zip(cpu, raw, strict=True)], note=label,
                 ratio_to="raw SDK call, same repetition")


if __name__ == "__main__":
    sys.exit(main())

"""Comparison (optional): the B2 workload, 1,000 concurrent runs x 5 steps (a model call with
50 ms latency and a read-only tool per step), on four durable journals backed by SQLite
files, in one run:

* Tether (SQLite, durability ``power``), as in B2, in the project's virtualenv;
* LangGraph with its SQLite checkpointer (``AsyncSqliteSaver``; a model node and a tool node
  in a loop, one checkpoint per super-step, default durability),
* DBOS Transact with a SQLite system database (a workflow with a model step and a tool step
  per iteration; each step's output is recorded before the workflow goes on), and
* a hand-written asyncio + SQLite journal with group commit (standard library only): the
  floor a durable journal of this workload can reach in Python.

LangGraph and DBOS run in a separate virtualenv (default ``.venv-bench``; they are not
dependencies of the project): ``.venv-bench/bin/pip install langgraph
langgraph-checkpoint-sqlite aiosqlite dbos``. A framework that is not installed there is reported as n/a. Each case runs in a child
process; wall time is from the first start to the last completion. Ratios are to Tether in
the same repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from bench_common import (
    BENCH_DIR,
    base_parser,
    emit,
    log,
    paired_ratio,
    python_child,
    run_child,
    work_dir,
)

BENCH = "compare_frameworks"
SCRIPT = Path(__file__).resolve()
LATENCY = 0.05
FRAMEWORKS = ("langgraph", "dbos")


def _order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "item": "espresso grinder", "quantity": 1, "paid": True}


def _reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(messages)
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call-{n}", "type": "function",
         "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": f"A-{n}"})}}]}


def _initial() -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a support agent for an online shop."},
            {"role": "user", "content": "Where is my order?"}]


# -- LangGraph ---------------------------------------------------------------------------------

class GraphState(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]
    steps: int


async def langgraph_case(runs: int, steps: int, db: Path) -> dict[str, float]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph

    async def model(state: GraphState) -> dict[str, Any]:
        await asyncio.sleep(LATENCY)
        return {"messages": [_reply(state["messages"])], "steps": state["steps"] + 1}

    async def tool(state: GraphState) -> dict[str, Any]:
        call = state["messages"][-1]["tool_calls"][0]
        result = _order(json.loads(call["function"]["arguments"])["order_id"])
        return {"messages": [{"role": "tool", "tool_call_id": call["id"],
                              "content": json.dumps(result)}]}

    def route(state: GraphState) -> str:
        return "model" if state["steps"] < steps else END

    builder = StateGraph(GraphState)
    builder.add_node("model", model)
    builder.add_node("tool", tool)
    builder.add_edge(START, "model")
    builder.add_edge("model", "tool")
    builder.add_conditional_edges("tool", route)
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        await saver.setup()
        graph = builder.compile(checkpointer=saver)

        async def one(index: int) -> None:
            config: Any = {"configurable": {"thread_id": f"run-{index}"},
                           "recursion_limit": 4 * steps + 10}
            state = await graph.ainvoke({"messages": _initial(), "steps": 0}, config)
            assert len(state["messages"]) == 2 + 2 * steps

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(runs)))
        return {"wall_seconds": time.perf_counter() - started}


# -- DBOS --------------------------------------------------------------------------------------

async def dbos_case(runs: int, steps: int, db: Path) -> dict[str, float]:
    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {"name": "tether-bench", "system_database_url": f"sqlite:///{db}",
                          "log_level": "WARNING"}
    DBOS(config=config)

    @DBOS.step()
    async def model(messages: list[dict[str, Any]]) -> dict[str, Any]:
        await asyncio.sleep(LATENCY)
        return _reply(messages)

    @DBOS.step()
    async def tool(order_id: str) -> dict[str, Any]:
        return _order(order_id)

    @DBOS.workflow()
    async def agent(count: int) -> int:
        messages = _initial()
        for _ in range(count):
            reply = await model(messages)
            messages.append(reply)
            call = reply["tool_calls"][0]
            result = await tool(json.loads(call["function"]["arguments"])["order_id"])
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": json.dumps(result)})
        return len(messages)

    DBOS.launch()
    try:
        async def one() -> None:
            handle = await DBOS.start_workflow_async(agent, steps)
            assert await handle.get_result() == 2 + 2 * steps

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(runs)))
        return {"wall_seconds": time.perf_counter() - started}
    finally:
        DBOS.destroy()


# -- a hand-written asyncio + SQLite journal with group commit ---------------------------------

class GroupCommitJournal:
    """The least a durable journal needs: one writer thread, one transaction per batch. A
    write that must be durable before the caller goes on (run start and end) starts a batch
    at once and is awaited; step records wait at most 20 ms for the next batch."""

    def __init__(self, db: Path) -> None:
        import sqlite3
        import threading

        self._conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("CREATE TABLE runs (run_id INTEGER PRIMARY KEY, status TEXT)")
        self._conn.execute("CREATE TABLE journal (run_id INTEGER, seq INTEGER, value TEXT, "
                           "PRIMARY KEY (run_id, seq))")
        self._cond = threading.Condition()
        self._ops: list[tuple[str, tuple[Any, ...], asyncio.Future[None] | None]] = []
        self._urgent = False
        self._deadline = 0.0
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a write for the next batch (at most 20 ms away)."""
        self._submit(sql, params, None)

    def write_durable(self, sql: str, params: tuple[Any, ...]) -> asyncio.Future[None]:
        """Queue a write, start a batch now, and return what to await until it is durable."""
        future = self._loop.create_future()
        self._submit(sql, params, future)
        return future

    def _submit(self, sql: str, params: tuple[Any, ...],
                future: asyncio.Future[None] | None) -> None:
        with self._cond:
            self._ops.append((sql, params, future))
            if future is not None:
                self._urgent = True
            elif len(self._ops) == 1:
                self._deadline = time.monotonic() + 0.02
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._conn.close()

    def _main(self) -> None:
        while True:
            with self._cond:
                while not (self._urgent or self._closing
                           or (self._ops and time.monotonic() >= self._deadline)):
                    timeout = self._deadline - time.monotonic() if self._ops else None
                    self._cond.wait(timeout)
                ops, self._ops, self._urgent = self._ops, [], False
                closing = self._closing
            if ops:
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, params, _ in ops:
                    self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
                done = [future for _, _, future in ops if future is not None]
                if done:
                    self._loop.call_soon_threadsafe(_resolve, done)
            if closing:
                return


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


async def handwritten_case(runs: int, steps: int, db: Path) -> dict[str, float]:
    journal = GroupCommitJournal(db)

    async def one(run_id: int) -> None:
        await journal.write_durable("INSERT INTO runs VALUES (?, 'running')", (run_id,))
        messages = _initial()
        for step in range(steps):
            await asyncio.sleep(LATENCY)
            reply = _reply(messages)
            messages.append(reply)
            journal.write("INSERT INTO journal VALUES (?, ?, ?)",
                          (run_id, 2 * step + 1, json.dumps(reply)))
            call = reply["tool_calls"][0]
            result = json.dumps(_order(json.loads(call["function"]["arguments"])["order_id"]))
            journal.write("INSERT INTO journal VALUES (?, ?, ?)", (run_id, 2 * step + 2, result))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        await journal.write_durable("UPDATE runs SET status = 'completed' WHERE run_id = ?",
                                    (run_id,))

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(runs)))
        return {"wall_seconds": time.perf_counter() - started}
    finally:
        journal.close()


# -- the driver --------------------------------------------------------------------------------

CASES = {"langgraph": langgraph_case, "dbos": dbos_case, "handwritten": handwritten_case}


def child(args: argparse.Namespace) -> None:
    case = CASES[args.child]
    result = asyncio.run(case(args.child_runs, args.steps, args.db))
    print(json.dumps(result), flush=True)


def installed(python: Path, framework: str) -> bool:
    module = {"langgraph": "langgraph.checkpoint.sqlite.aio", "dbos": "dbos"}[framework]
    if not python.exists():
        return False
    return run_child([str(python), "-c", f"import {module}"], timeout=120).returncode == 0


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "comparison")
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs (default 1000)")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (default 5)")
    parser.add_argument("--venv", type=Path, default=BENCH_DIR.parent / ".venv-bench",
                        help="the virtualenv with the other frameworks (default .venv-bench)")
    parser.add_argument("--frameworks", type=lambda s: s.split(","), default=list(FRAMEWORKS),
                        help="comma-separated subset of " + ",".join(FRAMEWORKS))
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    python = args.venv / "bin" / "python"
    available = [f for f in args.frameworks if installed(python, f)]
    for missing in sorted(set(args.frameworks) - set(available)):
        emit(BENCH, f"{missing}/{args.runs}x{args.steps}", "wall_seconds", "s", None,
             note=f"{missing} is not installed in {args.venv}")
    walls: dict[str, list[float]] = {name: [] for name in ["tether", "handwritten", *available]}
    with work_dir(args.dir) as directory:
        for rep in range(args.reps):
            log(f"compare: repetition {rep + 1}/{args.reps}")
            db = directory / f"tether-{rep}.db"
            result = run_child(python_child(
                BENCH_DIR / "b2_concurrent.py", "--child", "tether", "--store", "power",
                "--child-runs", str(args.runs), "--steps", str(args.steps), "--db", str(db)),
                timeout=900).check("tether child")
            walls["tether"].append(result.json_lines()[-1]["wall_seconds"])
            for name in ["handwritten", *available]:
                db = directory / f"{name}-{rep}.db"
                # The hand-written journal needs only the standard library.
                interpreter = sys.executable if name == "handwritten" else str(python)
                result = run_child([interpreter, str(SCRIPT), "--child", name, "--child-runs",
                                    str(args.runs), "--steps", str(args.steps), "--db", str(db)],
                                   timeout=1800).check(f"{name} child")
                walls[name].append(result.json_lines()[-1]["wall_seconds"])
    case = f"{args.runs}x{args.steps}"
    emit(BENCH, f"tether/{case}", "wall_seconds", "s", walls["tether"],
         note="SQLite, durability power (the B2 workload)")
    emit(BENCH, f"handwritten/{case}", "wall_seconds", "s", walls["handwritten"],
         ratio=paired_ratio(walls["handwritten"], walls["tether"]), ratio_to=f"tether/{case}",
         note="asyncio + one SQLite writer thread with group commit (synchronous=FULL): "
              "what a minimal journal costs")
    for name in available:
        emit(BENCH, f"{name}/{case}", "wall_seconds", "s", walls[name],
             ratio=paired_ratio(walls[name], walls["tether"]), ratio_to=f"tether/{case}",
             version=framework_version(python, name))


def framework_version(python: Path, name: str) -> str:
    result = run_child([str(python), "-c", "import importlib.metadata as m; "
                        f"print(m.version({name!r}))"], timeout=60)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()

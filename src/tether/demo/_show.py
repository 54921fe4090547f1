"""The demo driver: run the support agent in a worker process, SIGKILL it mid-run, resume it
in a fresh runtime, and show that the journal kept everything and no side effect repeated."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import click

from tether.config import load_settings
from tether.demo._agent import MODEL_LATENCY_SECONDS, MODEL_VARIABLE
from tether.models import load_model_configs
from tether.runtime import Runtime
from tether.store import Record, SQLiteStore

QUESTION = "Where is my espresso grinder (order A-1001)? Please send me a receipt."


def _say(text: str = "") -> None:
    click.echo(text)


def _command() -> str:
    """How to call ``tether`` from here: the script beside this Python, if there is one."""
    script = Path(sys.executable).parent / "tether"
    if not script.exists():
        return "tether"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _describe(record: Record) -> str:
    data = record.to_json()
    text = f"   seq {record.seq:<2} {record.kind:11} {record.name:22} {record.state}"
    if record.kind == "llm" and data["value"]:
        calls = [c["name"] for c in data["value"]["tool_calls"]]
        text += f"  -> {'calls ' + ', '.join(calls) if calls else 'final answer'}"
    if record.kind == "tool" and record.attempts > 1:
        text += f"  after {record.attempts} attempts (the first failed and was retried)"
    return text


def run_demo(directory: Path, model: str | None = None, config: Path | None = None) -> int:
    """Run the demo; returns the process exit status (0 when everything held).

    Args:
        directory: where the database, counters and outbox go.
        model: a model configured in ``config`` (or ``provider:model``) instead of the script.
        config: the ``tether.toml`` naming the model (default ``./tether.toml``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("demo.db*"), *directory.glob("*.calls"),
                  *directory.glob("*.attempts"), directory / "outbox.jsonl"]:
        stale.unlink(missing_ok=True)
    return anyio.run(_demo, directory, model, config)


async def _demo(directory: Path, model: str | None, config: Path | None) -> int:
    db_path = directory / "demo.db"
    db_url = f"sqlite:///{db_path}"
    os.environ["TETHER_DEMO_DIR"] = str(directory)  # the tools keep their counters there
    run_id = "demo-" + secrets.token_hex(4)
    models = load_model_configs(config)  # a bad [models] table fails here, before any run
    if model:
        os.environ[MODEL_VARIABLE] = model  # the worker process inherits it

    _say("Tether demo: a durable agent run survives SIGKILL")
    _say(f"database {db_path}  (model: {model})" if model else
         f"database {db_path}  (the scripted model takes {MODEL_LATENCY_SECONDS} s per reply)")
    _say()
    _say(f"1. A worker process starts run {run_id} of agent `support`:")
    process = await anyio.open_process(
        [sys.executable, "-m", "tether", "--db", db_url,
         *(["--config", str(config)] if config else []), "run", "tether.demo:support",
         "--input", json.dumps({"question": QUESTION}), "--run-id", run_id],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TETHER_DB": db_url})

    # Watch the journal from outside, as an operator would, and pull the plug once the
    # receipt has gone out and the model is thinking about its final answer.
    store = SQLiteStore(db_path)
    shown: set[int] = set()
    await anyio.sleep(0.2)
    await store.open()
    try:
        with anyio.fail_after(60):
            while True:
                records = await store.load_journal(run_id)
                for record in records:
                    if record.seq not in shown and record.state != "started":
                        _say(_describe(record))
                        shown.add(record.seq)
                # A real model need not follow the script: pull the plug after its first
                # tool result instead of after the receipt.
                crash_after = "send_receipt" if not model else None
                if any(r.kind == "tool" and r.state == "ok"
                       and crash_after in (None, r.name) for r in records):
                    break
                if process.returncode is not None:
                    if model and any(r.kind == "llm" and r.state == "ok" for r in records):
                        break  # the model answered before any tool: nothing to crash into
                    _say("   the worker exited before the crash point; see `tether runs show`")
                    return 1
                await anyio.sleep(0.05)
        await anyio.sleep(MODEL_LATENCY_SECONDS / 2)  # mid-way through the next model call
        process.send_signal(signal.SIGKILL)
        await process.wait()
        before = await store.get_run(run_id)
        recorded = len(await store.load_journal(run_id))
    finally:
        await store.aclose()
    _say()
    _say(f"2. SIGKILL: worker pid {process.pid} died while the model was thinking.")
    _say(f"   The run is still `{before.status if before else '?'}` and its journal holds "
         f"{recorded} records.")

    _say()
    _say("3. A fresh runtime sees the dead owner, claims the run and replays it:")
    settings = load_settings(config, db=db_url)
    async with Runtime(settings=settings, worker=True, models=models) as rt:
        async with rt.events.subscribe(run_id) as events:
            handle = rt.handle(run_id)
            with anyio.fail_after(60):
                result = await handle.result()
                stats = {}
                async for event in events:
                    if event.type == "run.completed":
                        stats = event.data
                        break
        journal = await rt.journal(run_id)
    replayed, executed = stats.get("replayed", "?"), stats.get("executed", "?")
    _say(f"   {replayed} effects answered from the journal, {executed} executed live.")

    outbox = _lines(directory / "outbox.jsonl")
    lookups = _lines(directory / "lookup_order.calls")
    receipts = _lines(directory / "send_receipt.calls")
    attempts = _lines(directory / "reserve_stock.attempts")
    _say(f"   lookup_order ran {len(lookups)} time(s); send_receipt ran {len(receipts)} time(s); "
         f"the outbox holds {len(outbox)} e-mail(s).")
    _say(f"   reserve_stock took {len(attempts)} attempts (a failure, then a retry), once.")
    _say()
    _say(f"4. Result ({len(journal)} journal records): {result}")
    _say()
    tether = _command()
    _say("Look closer:")
    _say(f"   {tether} --db {db_url} runs show {run_id}")
    _say(f"   {tether} --db {db_url} runs ls")
    if model:  # whatever the model chose to call: no side effect ran twice for one call
        keys = [json.loads(line)["key"] for line in outbox]
        held = len(keys) == len(set(keys)) and len(attempts) <= 2 * len(set(attempts))
    else:
        held = (len(outbox) == 1 and len(lookups) == 1 and len(receipts) == 1
                and len(attempts) == 2)
    if not held:
        _say("UNEXPECTED: a side effect ran more than once; please report this.")
    return 0 if held else 1

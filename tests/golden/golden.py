"""Golden journals: runs recorded by an earlier version of Tether, kept as JSON, and replayed
against the current code. A change that would strand runs already in flight (an agent or the
tool loop asking for different effects, a journal format change) fails here first.

Record again, after a deliberate change, with ``python tests/golden/golden.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

import tether
from tether.store import Commit, NewRun, Record, Store

HERE = Path(__file__).parent
GOLDEN_CASES = {
    "demo_support": ("tether.demo._agent:support", {
        "question": "Where is my espresso grinder (order A-1001)? Please send me a receipt."}),
}


def export(run: tether.Run, records: list[Record]) -> dict[str, Any]:
    return {"format": 1, "run": run.to_json(), "journal": [r.to_json() for r in records]}


async def import_into(store: Store, data: dict[str, Any], *, now_ms: int) -> str:
    """Create the recorded run (pending, unowned) with its journal, as a crashed worker left it."""
    run = data["run"]
    created = await store.create_run(NewRun(
        run_id=run["run_id"], agent=run["agent"], agent_version=run["agent_version"],
        agent_ref=run["agent_ref"], input=json.dumps(run["input"]), tenant=run["tenant"],
        principal=run["principal"], thread_id=run["thread_id"]),
        now_ms=now_ms, owner="golden:0:0:0", lease_ms=0)
    assert created.claim is not None
    records = [Record(r["seq"], r["kind"], r["name"], r["digest"], r["state"],
                      None if r["value"] is None else json.dumps(r["value"]), r["attempts"],
                      r["started_at_ms"], r["finished_at_ms"],
                      None if r["detail"] is None else json.dumps(r["detail"]))
               for r in data["journal"]]
    pending = store.append(run["run_id"], created.claim.fence, records, Commit.WAIT)
    if pending is not None:
        await pending
    await store.release(owner="golden:0:0:0")
    return str(run["run_id"])


async def record(name: str) -> None:
    """Run a golden case on the current code and write its journal."""
    ref, input_data = GOLDEN_CASES[name]
    with tempfile.TemporaryDirectory() as work:
        os.environ["TETHER_DEMO_DIR"] = work
        async with tether.Runtime("memory://") as rt:
            handle = await rt.start(ref, input_data, run_id=f"golden-{name}")
            await handle.result()
            data = export(await rt.get(handle.run_id), await rt.journal(handle.run_id))
    (HERE / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    for case in sys.argv[1:] or GOLDEN_CASES:
        anyio.run(record, case)
        print(f"recorded {case}")

"""Every golden journal replays on the current code without acting again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tether
from golden import GOLDEN_CASES, HERE, import_into
from tether.store import SQLiteStore
from tether.types import RunStatus

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
async def test_a_recorded_run_replays_to_its_recorded_result_without_acting(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_DEMO_DIR", str(tmp_path))  # where the demo's tools would write
    data = json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))
    db = tmp_path / "golden.db"
    store = SQLiteStore(db)
    await store.open()
    try:
        run_id = await import_into(store, data, now_ms=data["run"]["created_at_ms"])
    finally:
        await store.aclose()

    settings = tether.Settings(db=f"sqlite:///{db}", poll_interval_seconds=0.05)
    async with tether.Runtime(settings=settings) as rt, rt.events.subscribe(run_id) as events:
        assert await rt.handle(run_id).result() == data["run"]["result"]
        journal = [r.to_json() for r in await rt.journal(run_id)]
        async for event in events:
            if event.type == f"run.{RunStatus.COMPLETED}":
                break
    assert event.data["executed"] == 0, "a golden run must replay every effect, act on none"
    assert journal == data["journal"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("golden.db")) \
        == [], "no tool ran (the demo's tools leave files behind)"

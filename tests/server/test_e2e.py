"""``tether serve`` as a real process: the API, streams and the client over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.client import AsyncClient, Client
from tether.errors import RunConflict, RunNotFound, Unauthenticated

from .process import ServerProcess, start_server, tether


def test_the_client_starts_follows_and_reads_a_run(server: ServerProcess) -> None:
    with Client(server.url, api_key=server.key) as client:
        run = client.start("stepper", {"steps": 4, "pause": 0.02}, run_id="e2e-1")
        events = list(client.events(run["run_id"]))
        assert [e.id for e in events if e.id is not None] == [1, 2, 3, 4, 5]
        assert client.get("e2e-1")["status"] == "completed"
        assert len(client.journal("e2e-1")) == 4
        assert client.start("stepper", {"steps": 4, "pause": 0.02},
                            run_id="e2e-1")["run_id"] == "e2e-1"
        with pytest.raises(RunConflict):
            client.start("stepper", {"steps": 5}, run_id="e2e-1")
        with pytest.raises(RunNotFound):
            client.get("nope")
        assert "e2e-1" in [r["run_id"] for r in client.list_runs(agent="stepper")["runs"]]
    with Client(server.url) as anonymous, pytest.raises(Unauthenticated):
        anonymous.list_runs()


@pytest.mark.anyio
async def test_the_async_client_signals_and_cancels(server: ServerProcess) -> None:
    async with AsyncClient(server.url, api_key=server.key) as client:
        await client.start("waiter", run_id="e2e-wait")
        await client.start("waiter", run_id="e2e-cancel")
        await client.signal("e2e-wait", "go", {"ok": True})
        events = [e async for e in client.events("e2e-wait")]
        assert events[-1].event == "end"
        assert (await client.get("e2e-wait"))["result"] == {"ok": True}
        assert (await client.cancel("e2e-cancel"))["status"] == "cancelled"


def test_serve_refuses_to_start_without_keys_or_off_loopback(tmp_path: Path) -> None:
    no_keys = tether("--db", f"sqlite:///{tmp_path / 'a.db'}", "serve", "--port", "0",
                     cwd=tmp_path)
    assert no_keys.returncode == 2
    assert "needs API keys" in no_keys.stderr
    exposed = tether("--db", f"sqlite:///{tmp_path / 'a.db'}", "serve", "--insecure-no-auth",
                     "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)  # noqa: S104 -- refused
    assert exposed.returncode == 2
    assert "loopback" in exposed.stderr


def test_insecure_mode_warns_loudly(tmp_path: Path) -> None:
    process = start_server(tmp_path / "open", extra=("--insecure-no-auth",))
    try:
        with Client(process.url) as client:
            assert client.start("greeter", {"name": "x"})["principal"] == "alice"
    finally:
        assert process.stop() == 0
    assert "WITHOUT an API key" in process.stderr()

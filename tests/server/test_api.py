"""The HTTP API in process: runs, idempotent starts, tenancy, pagination, errors, health."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.types import RunStatus

from .server_support import serve_in_process

pytestmark = pytest.mark.anyio


async def test_a_started_run_completes_and_its_journal_is_readable(db_url: str,
                                                                   tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served:
        response = await served.client.post("/v1/runs", json={"agent": "chatty",
                                                              "input": {"name": "Ada"}})
        assert response.status_code == 201, response.text
        run = response.json()
        assert (run["tenant"], run["principal"]) == ("acme", "alice")
        result = await served.runtime.handle(run["run_id"]).result()
        assert result == "HELLO FROM THE MODEL Ada"
        shown = (await served.client.get(f"/v1/runs/{run['run_id']}")).json()
        assert shown["status"] == "completed"
        journal = (await served.client.get(f"/v1/runs/{run['run_id']}/journal")).json()
        assert [(r["kind"], r["state"]) for r in journal["records"]] == [("llm", "ok"),
                                                                         ("tool", "ok")]
        assert journal["records"][0]["detail"]["usage"]["output_tokens"] == 5


async def test_start_is_idempotent_by_run_id_and_conflicts_on_other_input(
        db_url: str, tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served:
        body = {"agent": "greeter", "input": {"name": "Ada"}, "run_id": "order-7"}
        first = await served.client.post("/v1/runs", json=body)
        again = await served.client.post("/v1/runs", json=body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["run_id"] == "order-7"
        other = await served.client.post("/v1/runs", json={**body, "input": {"name": "Bob"}})
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "run.conflict"


async def test_a_key_sees_only_its_tenant(sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        run = (await served.client.post("/v1/runs", json={
            "agent": "greeter", "input": {"name": "Ada"}, "run_id": "acme-1"})).json()
        async with served.as_key(served.keys.issue("gina", "globex")) as other:
            missing = await other.get(f"/v1/runs/{run['run_id']}")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "run.not_found"
            assert (await other.get("/v1/runs")).json()["runs"] == []
            for path in ("journal", "events"):
                assert (await other.get(f"/v1/runs/{run['run_id']}/{path}")).status_code == 404
            cancel = await other.post(f"/v1/runs/{run['run_id']}/cancel", json={})
            assert cancel.status_code == 404
            # Reusing another tenant's id is a conflict that shows none of its data.
            taken = await other.post("/v1/runs", json={
                "agent": "greeter", "input": {"name": "Eve"}, "run_id": "acme-1"})
            assert taken.status_code == 409
            assert "Ada" not in taken.text


async def test_requests_without_a_valid_key_get_401(sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer tk_nope_nope"},
                        {"Authorization": "Basic YWxpY2U6eA=="}):
            response = await served.client.get("/v1/runs", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "auth.unauthenticated"
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await served.client.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_list_runs_filters_and_pages_with_a_cursor(sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        for i in range(5):
            await served.client.post("/v1/runs", json={"agent": "greeter", "run_id": f"r{i}",
                                                       "input": {"name": str(i)}})
        await served.client.post("/v1/runs", json={"agent": "waiter", "run_id": "w"})
        await served.runtime.handle("w").settled()
        seen: list[str] = []
        url = "/v1/runs?agent=greeter&limit=2"
        while True:
            page = (await served.client.get(url)).json()
            seen += [run["run_id"] for run in page["runs"]]
            if page["next_cursor"] is None:
                break
            url = f"/v1/runs?agent=greeter&limit=2&cursor={page['next_cursor']}"
        assert sorted(seen) == [f"r{i}" for i in range(5)]
        assert len(seen) == 5
        waiting = (await served.client.get("/v1/runs?status=waiting")).json()["runs"]
        assert [run["run_id"] for run in waiting] == ["w"]
        bad = await served.client.get("/v1/runs?status=sleepy")
        assert bad.status_code == 400
        assert "status must be one of" in bad.json()["error"]["message"]
        assert (await served.client.get("/v1/runs?cursor=garbage")).status_code == 400


async def test_signal_wakes_a_waiting_run_and_cancel_stops_one(db_url: str,
                                                               tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served:
        for run_id in ("a", "b"):
            await served.client.post("/v1/runs", json={"agent": "waiter", "run_id": run_id})
            await served.runtime.handle(run_id).settled()
        signalled = await served.client.post("/v1/runs/a/signals",
                                             json={"name": "go", "data": {"n": 1}})
        assert signalled.status_code == 200, signalled.text
        assert await served.runtime.handle("a").result() == {"n": 1}
        cancelled = await served.client.post("/v1/runs/b/cancel", json={"reason": "no longer"})
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["error"]["by"] == "alice"
        assert (await served.runtime.get("b")).status is RunStatus.CANCELLED


async def test_bad_bodies_and_unknown_agents_get_clear_errors(sqlite_url: str,
                                                              tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        cases = [
            (b"{not json", 400, "usage", "not valid JSON"),
            (b"[1]", 400, "usage", "must be a JSON object"),
            (b'{"agent": "greeter", "surprise": 1}', 400, "usage", "surprise"),
            (b'{"agent": "greeter", "input": {"name": 3}}', 400, "usage", "name"),
            (b'{"agent": "os:system"}', 404, "agent.not_found", "greeter"),
        ]
        for body, status, code, hint in cases:
            response = await served.client.post("/v1/runs", content=body)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["code"] == code, error
            assert hint in error["message"], error
        missing = await served.client.get("/v1/nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "usage"


async def test_health_readiness_and_metrics(sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        assert (await served.client.get("/readyz")).json() == {"status": "ready"}
        await served.client.post("/v1/runs", json={"agent": "greeter", "input": {"name": "A"}})
        text = (await served.client.get("/metrics")).text
        assert "tether_runs_started_total 1.0" in text
        assert 'tether_http_requests_total{method="POST",route="/v1/runs",status="201"} 1.0' in text


async def test_insecure_mode_acts_as_the_runtime_principal(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path, insecure=True) as served:
        response = await served.client.post("/v1/runs", headers={"Authorization": ""},
                                            json={"agent": "greeter", "input": {"name": "A"}})
        assert response.status_code == 201
        assert response.json()["principal"] == "alice"

"""The API with [governance]: policies on runs, approvals decided over HTTP, the audit trail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tether.governance import Governance, GovernanceConfig

from .server_support import serve_in_process

pytestmark = pytest.mark.anyio

POLICIES = Path(__file__).resolve().parents[1] / "governance" / "policies"


def governance(tmp_path: Path) -> Governance:
    shutil.copytree(POLICIES, tmp_path / "policies")
    return Governance(GovernanceConfig(policy_dir=tmp_path / "policies",
                                       audit_dir=tmp_path / "audit", reload_check_seconds=0.001))


async def test_a_held_call_is_approved_over_http_and_the_audit_verifies(
        db_url: str, tmp_path: Path) -> None:
    gov = governance(tmp_path)
    async with serve_in_process(db_url, tmp_path, governance=gov) as served:
        started = await served.client.post("/v1/runs", json={
            "agent": "support", "input": {"question": "refund A-1"}, "run_id": "refund-1"})
        assert started.status_code == 201, started.text
        run = await served.runtime.handle("refund-1").settled()
        assert run.waiting_for is not None
        pending = (await served.client.get("/v1/approvals")).json()["approvals"]
        assert [(a["tool"], a["args"]) for a in pending] == [("refund", {"order_id": "A-1",
                                                                          "amount": 900})]
        approval_id = pending[0]["approval_id"]
        # alice may not approve; bob (a supervisor) may.
        refused = await served.client.post(f"/v1/approvals/{approval_id}/decision",
                                           json={"approve": True, "reason": "mine"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "policy.denied"
        async with served.as_key(served.keys.issue("bob", "acme")) as bob:
            decided = await bob.post(f"/v1/approvals/{approval_id}/decision",
                                     json={"approve": True, "reason": "customer is right"})
            assert decided.status_code == 200, decided.text
            assert decided.json()["decided_by"] == "bob"
            assert await served.runtime.handle("refund-1").result() == \
                'done: "refunded 900 on A-1"'
            # bob reads runs as a supervisor; a key of another tenant sees none of it.
            assert (await bob.get("/v1/runs/refund-1")).status_code == 200
        async with served.as_key(served.keys.issue("gina", "globex")) as gina:
            assert (await gina.get("/v1/approvals?status=all")).json()["approvals"] == []
            assert (await gina.get(f"/v1/approvals/{approval_id}")).status_code == 404
        await gov.checkpoint_all(served.runtime.store)
        verified = (await served.client.get("/v1/audit/verify")).json()
        assert verified["intact"] is True
        assert verified["records"] > 0
        records = (await served.client.get("/v1/audit")).json()["records"]
        assert any(r["record"].get("type") == "approval.decided" for r in records)


async def test_policies_decide_who_reads_a_run(sqlite_url: str, tmp_path: Path) -> None:
    gov = governance(tmp_path)
    async with serve_in_process(sqlite_url, tmp_path, governance=gov) as served:
        await served.client.post("/v1/runs", json={
            "agent": "support", "input": {"question": "hi"}, "run_id": "r"})
        async with served.as_key(served.keys.issue("carol", "acme")) as carol:
            denied = await carol.get("/v1/runs/r")
            assert denied.status_code == 403
            assert denied.json()["error"]["code"] == "policy.denied"
            assert (await carol.get("/v1/runs")).json()["runs"] == []
            started = await carol.post("/v1/runs", json={"agent": "support",
                                                         "input": {"question": "x"}})
            assert started.status_code == 403


async def test_approvals_without_governance_say_what_to_configure(sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        response = await served.client.get("/v1/audit/verify")
        assert response.status_code == 400
        assert "[governance]" in response.json()["error"]["message"]

"""What ``--server`` needs of the API (resolve, the kill switch, who a key is), spend from the
budget ledger or the journals, and API keys read again only when their file changes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tether.governance import APIKeys, Governance, GovernanceConfig, PeriodBudget
from tether.governance._budget import BudgetConfig

from .server_support import serve_in_process

pytestmark = pytest.mark.anyio

POLICIES = Path(__file__).resolve().parents[1] / "governance" / "policies"


def governance(tmp_path: Path, budgets: BudgetConfig | None = None) -> Governance:
    shutil.copytree(POLICIES, tmp_path / "policies")
    return Governance(GovernanceConfig(policy_dir=tmp_path / "policies",
                                       audit_dir=tmp_path / "audit", reload_check_seconds=0.001,
                                       budgets=budgets))


async def test_a_run_needing_attention_is_resolved_over_http(db_url: str,
                                                             tmp_path: Path) -> None:
    async with serve_in_process(db_url, tmp_path) as served:
        await served.client.post("/v1/runs", json={"agent": "fickle", "run_id": "f"})
        assert (await served.runtime.handle("f").settled()).status == "waiting"
        await served.client.post("/v1/runs/f/signals", json={"name": "go"})
        parked = await served.runtime.handle("f").settled()
        assert parked.status == "needs_attention"
        bad = await served.client.post("/v1/runs/f/resolve", json={"action": "forget"})
        assert bad.status_code == 400
        resolved = await served.client.post("/v1/runs/f/resolve", json={"action": "fail"})
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["status"] == "failed"


async def test_the_kill_switch_cancels_only_what_the_caller_may(sqlite_url: str,
                                                                tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path, governance=governance(tmp_path)) as served:
        for run_id in ("k1", "k2"):
            await served.client.post("/v1/runs", json={
                "agent": "support", "input": {"question": "refund"}, "run_id": run_id})
            await served.runtime.handle(run_id).settled()
        async with served.as_key(served.keys.issue("carol", "acme")) as carol:
            assert (await carol.get("/v1/whoami")).json() == {"principal": "carol",
                                                              "tenant": "acme"}
            listed = (await carol.get("/v1/runs")).json()
            assert (listed["runs"], listed["hidden"]) == ([], 2)
            refused = (await carol.post("/v1/runs/cancel", json={})).json()
            assert (refused["cancelled"], refused["refused"]) == ([], 2)
        async with served.as_key(served.keys.issue("bob", "acme")) as bob:
            done = (await bob.post("/v1/runs/cancel", json={"agent": "support",
                                                            "reason": "incident 7"})).json()
            assert sorted(r["run_id"] for r in done["cancelled"]) == ["k1", "k2"]
            assert {r["error"]["message"] for r in done["cancelled"]} == {"incident 7"}
            assert done["refused"] == 0
        async with served.as_key(served.keys.issue("gina", "globex")) as gina:
            # Another tenant's kill switch never reaches acme's runs.
            assert (await gina.post("/v1/runs/cancel", json={})).json() == {
                "cancelled": [], "refused": 0}


async def test_spend_comes_from_the_journals_without_a_tenant_budget(
        sqlite_url: str, tmp_path: Path) -> None:
    async with serve_in_process(sqlite_url, tmp_path) as served:
        for name in ("Ada", "Bob"):
            started = await served.client.post("/v1/runs", json={"agent": "chatty",
                                                                 "input": {"name": name}})
            await served.runtime.handle(started.json()["run_id"]).settled()
        spend = (await served.client.get("/v1/spend")).json()
        assert (spend["source"], spend["ledger"]) == ("journals", [])
        journals = spend["journals"]
        assert (journals["runs"], journals["model_calls"], journals["input_tokens"],
                journals["output_tokens"]) == (2, 2, 24, 10)
        assert journals["cost_usd"] == pytest.approx(0.0002)
        assert journals["cost_usd_by_agent"] == {"chatty": pytest.approx(0.0002)}


async def test_spend_comes_from_the_budget_ledger_with_a_tenant_budget(
        db_url: str, tmp_path: Path) -> None:
    budgets = BudgetConfig(periods=(PeriodBudget(per="tenant", period="day", steps=50,
                                                 tool_calls=20),
                                    PeriodBudget(per="principal", period="month", steps=5)))
    gov = governance(tmp_path, budgets)
    async with serve_in_process(db_url, tmp_path, governance=gov) as served:
        await served.client.post("/v1/runs", json={
            "agent": "support", "input": {"question": "refund"}, "run_id": "s1"})
        await served.runtime.handle("s1").settled()
        approval = (await served.client.get("/v1/approvals")).json()["approvals"][0]
        async with served.as_key(served.keys.issue("bob", "acme")) as bob:
            await bob.post(f"/v1/approvals/{approval['approval_id']}/decision",
                           json={"approve": True, "reason": "ok"})
        assert (await served.runtime.handle("s1").settled()).status == "completed"
        spend = (await served.client.get("/v1/spend")).json()
        assert (spend["source"], spend["journals"]) == ("ledger", None)
        # Only the tenant's budget: the per-principal one is not the tenant's spend.
        lines = {line["unit"]: line for line in spend["ledger"]}
        assert set(lines) == {"steps", "tool_calls"}
        journal = (await served.client.get("/v1/runs/s1/journal")).json()["records"]
        assert lines["steps"]["spent"] == sum(r["kind"] == "llm" for r in journal) == 2
        assert (lines["tool_calls"]["spent"], lines["tool_calls"]["cap"]) == (1, 20)
        assert lines["steps"]["period"] == "day"
        assert lines["steps"]["scope"].startswith("tenant:acme:")
        # Another tenant has spent nothing of its own budget.
        async with served.as_key(served.keys.issue("gina", "globex")) as gina:
            other = (await gina.get("/v1/spend")).json()
            assert {line["unit"]: line["spent"] for line in other["ledger"]} == {
                "steps": 0, "tool_calls": 0}


def test_api_keys_see_a_change_to_their_file_at_once(tmp_path: Path) -> None:
    """The server's keys (cached) and another process's (the CLI's ``keys`` commands)."""
    served, admin = APIKeys(tmp_path / "keys.json"), APIKeys(tmp_path / "keys.json")
    assert served.verify("tk_abc_def") is None  # no file yet
    first = admin.issue("alice", "acme")
    identity = served.verify(first)
    assert identity is not None
    assert (identity.principal, identity.tenant) == ("alice", "acme")
    second = admin.issue("bob", "acme")
    assert served.verify(second) is not None
    assert admin.revoke(first.split("_")[1])
    assert served.verify(first) is None
    assert served.verify(second) is not None
    # An edit by hand that keeps the size, within the same timestamp tick, still counts.
    text = (tmp_path / "keys.json").read_text()
    (tmp_path / "keys.json").write_text(text.replace('"bob"', '"eve"'))
    again = served.verify(second)
    assert again is not None
    assert again.principal == "eve"
    (tmp_path / "keys.json").unlink()
    assert served.verify(second) is None


def test_api_keys_are_read_once_while_their_file_is_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = APIKeys(tmp_path / "keys.json")
    key = keys.issue("alice", "acme")
    settled = time.time() - 60  # as if issued a minute ago, past the racy window
    os.utime(tmp_path / "keys.json", (settled, settled))
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    for _ in range(100):
        assert keys.verify(key) is not None
    assert reads == [tmp_path / "keys.json"]
    assert keys.verify("tk_nope_nope") is None
    assert len(reads) == 1


def test_a_budget_period_names_the_scope_the_stage_posts_to() -> None:
    day = PeriodBudget(per="tenant", period="day", steps=1)
    month = dataclasses.replace(day, per="principal", period="month", only="alice")
    at = 1_764_115_200_000  # 2025-11-26T00:00:00Z
    assert day.scope("acme", "alice", at) == "tenant:acme:2025-11-26"
    assert month.scope("acme", "alice", at) == "tenant:acme:principal:alice:2025-11"
    assert month.applies("acme", "alice")
    assert not month.applies("acme", "bob")

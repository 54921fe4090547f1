"""Residency: a tenant's calls go only to models and tools in its regions; a refusal is
journaled as the call's outcome and audited, and nothing falls back elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from gov_support import calls, governance, support_agent

import tether
from conftest import fast_settings
from tether.errors import ConfigError, ResidencyViolation
from tether.governance import ResidencyConfig, ResidencyStage
from tether.types import Reply

pytestmark = pytest.mark.anyio


def residency(model_region: str) -> ResidencyConfig:
    return ResidencyConfig(tenants={"acme": frozenset({"eu"})},
                           regions={"model:scripted": model_region, "tool:lookup_order": "eu"})


async def test_an_eu_tenants_call_to_a_us_model_is_refused_and_audited(
        tmp_path: Path, db_url: str) -> None:
    gov = governance(tmp_path, residency=residency("us"))
    agent, model = support_agent([Reply(text="never")])
    async with tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                              stages=gov.stages()) as rt:
        handle = await rt.start(agent, {"question": "hello"})
        with pytest.raises(tether.errors.RunFailed):
            await handle.result()
        assert model.calls == 0  # the model never saw the tenant's data
        (record,) = [r.to_json() for r in await rt.journal(handle.run_id) if r.kind == "llm"]
        assert record["value"]["code"] == "residency.violation"
        assert record["value"]["region"] == "us"
        assert record["value"]["allowed"] == ["eu"]
        assert record["detail"]["residency"] == {"region": "us", "allowed": ["eu"]}
        audit = "".join(row.body for row in await rt.store.load_audit("acme"))
        assert '"type":"residency.refused"' in audit
        assert '"code":"residency.violation"' in audit  # the refused outcome, too


async def test_calls_inside_the_tenants_regions_go_ahead(tmp_path: Path, db_url: str) -> None:
    gov = governance(tmp_path, residency=residency("eu"))
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A1"})), Reply(text="paid")])
    async with tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                              stages=gov.stages()) as rt:
        assert await rt.run(agent, {"question": "A1?"}) == "paid"


async def test_an_unrestricted_tenant_is_not_checked(tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path, residency=residency("us"))
    agent, _ = support_agent([Reply(text="hi")])
    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="gina",
                                                     tenant="globex"),
                              stages=gov.stages()) as rt:
        assert await rt.run(agent, {"question": "hello"}) == "hi"


async def test_a_resource_without_a_region_is_refused_for_a_restricted_tenant(
        tmp_path: Path, sqlite_url: str) -> None:
    gov = governance(tmp_path, residency=ResidencyConfig(tenants={"acme": frozenset({"eu"})}))
    assert any(isinstance(stage, ResidencyStage) for stage in gov.stages())
    agent, _ = support_agent([Reply(text="never")])
    async with tether.Runtime(settings=fast_settings(sqlite_url, principal="alice",
                                                     tenant="acme"),
                              stages=gov.stages()) as rt:
        handle = await rt.start(agent, {"question": "hello"})
        with pytest.raises(tether.errors.RunFailed) as caught:
            await handle.result()
        assert caught.value.error is not None
        assert "no region declared" in caught.value.error["message"]
        assert "[governance.residency.regions]" in caught.value.error["message"]


def test_a_replayed_refusal_is_the_same_error() -> None:
    error = ResidencyViolation("no", tenant="acme", resource="model:x", region="us",
                               allowed=["eu"])
    again = tether.errors.error_from_json(error.to_json())
    assert isinstance(again, ResidencyViolation)
    assert again.to_json() == error.to_json()


def test_a_tenant_with_no_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lists no region"):
        ResidencyConfig(tenants={"acme": frozenset()})

"""Data residency across stores: with ``[regions.NAME]`` configured, an EU tenant's runs,
journal, audit chain and budget ledger land only in the EU file and a US tenant's only in the
US file (both files read with ``sqlite3``); a tenant with no region is refused; a worker
claims from both. Through a real ``tether.Runtime`` and the real ``tether`` command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from gov_support import calls, policy_copy, support_agent

import tether
from tether.config import load_settings
from tether.errors import NoHomeRegion
from tether.governance import Governance
from tether.store import NewRun, RoutedStore, open_store
from tether.types import Reply

HERE = Path(__file__).resolve().parent

CONFIG = """
[runtime]
poll_interval_seconds = 0.05
flush_interval_ms = 5

[regions.eu]
db = "sqlite:///{root}/eu.db"

[regions.us]
db = "sqlite:///{root}/us.db"

[governance]
policy_dir = "policies"
audit_dir = "audit"

[governance.residency]
# globex may send data to eu as well, but its home is us: the first listed with a store.
tenants = {{ acme = ["eu"], globex = ["us", "eu"] }}
regions = {{ "model:scripted" = "eu", "tool:lookup_order" = "eu" }}

[governance.budgets]
run = {{ steps = 10, tool_calls = 10 }}
"""


def project(root: Path) -> Path:
    """A project directory: test policies, and a tether.toml with two regions."""
    policy_copy(root)
    config = root / "tether.toml"
    config.write_text(CONFIG.format(root=root))
    return config


def column(path: Path, sql: str) -> list[object]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute(sql)]


def everything(path: Path) -> str:
    """Every row of the file, as SQL text."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return "\n".join(db.iterdump())


def assert_only(root: Path, region: str, tenant: str, run_ids: set[str],
                others: tuple[str, ...]) -> None:
    """The region's file holds ``tenant``'s runs and nothing that names ``others``."""
    db = root / f"{region}.db"
    assert set(column(db, "SELECT run_id FROM runs")) == run_ids
    assert set(column(db, "SELECT tenant FROM runs")) == {tenant}
    assert set(column(db, "SELECT DISTINCT run_id FROM journal")) == run_ids
    assert column(db, "SELECT DISTINCT tenant FROM audit") == [tenant]
    scopes = [str(scope) for scope in column(db, "SELECT scope FROM ledger")]
    assert scopes
    assert all(scope.startswith(f"tenant:{tenant}:run:") for scope in scopes)
    posts = [str(post) for post in column(db, "SELECT post_id FROM ledger_posts")]
    assert posts
    assert all(post.split(":")[0] in run_ids for post in posts)
    dump = everything(db)
    for other in others:
        assert other not in dump, f"{other!r} found in {region}.db"


@pytest.mark.anyio
async def test_each_tenants_runs_journal_audit_and_ledger_stay_in_its_regions_file(
        tmp_path: Path) -> None:
    config = project(tmp_path)
    governance = Governance.from_config(config)
    assert governance is not None
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A1"})), Reply(text="paid")])
    async with tether.Runtime(settings=load_settings(config),
                              stages=governance.stages()) as rt:
        assert isinstance(rt.store, RoutedStore)
        assert await rt.run(agent, {"question": "A1?"}, run_id="acme-1", tenant="acme",
                            principal="alice") == "paid"
        assert await rt.run(agent, {"question": "G1?"}, run_id="globex-1", tenant="globex",
                            principal="gina") == "paid"
        with pytest.raises(NoHomeRegion, match="tenant 'initech' has no home region"):
            await rt.start(agent, {"question": "I1?"}, run_id="initech-1", tenant="initech",
                           principal="alice")
        assert [run.run_id for run in await rt.store.list_runs()] == ["globex-1", "acme-1"]
        assert await rt.store.audit_tenants() == ["acme", "globex"]
    assert_only(tmp_path, "eu", "acme", {"acme-1"}, ("globex", "gina", "initech"))
    assert_only(tmp_path, "us", "globex", {"globex-1"}, ("acme", "alice", "initech"))


def tether_command(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tether ARGS`` in the project directory, as principal alice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(PYTHONPATH=str(HERE), TETHER_PRINCIPAL="alice")
    return subprocess.run([sys.executable, "-m", "tether", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_tether_run_and_worker_keep_each_tenant_in_its_region(tmp_path: Path) -> None:
    config = project(tmp_path)
    question = '{"question": "A-1?"}'
    ran = tether_command(tmp_path, "run", "region_agents:support", "--input", question,
                         "--run-id", "acme-1", "--tenant", "acme")
    assert ran.returncode == 0, ran.stderr
    refused = tether_command(tmp_path, "run", "region_agents:support", "--input", question,
                             "--tenant", "initech")
    assert refused.returncode == 2
    assert "residency.no_home_region" in refused.stderr
    assert "[governance.residency]" in refused.stderr

    async def leave_one_pending_in_each_region() -> None:
        store = open_store(load_settings(config))
        await store.open()
        try:
            for run_id, tenant, principal in (("acme-2", "acme", "alice"),
                                              ("globex-2", "globex", "gina")):
                await store.create_run(NewRun(
                    run_id=run_id, agent="support", agent_version="1",
                    agent_ref="region_agents:support", input=question, tenant=tenant,
                    principal=principal), now_ms=0, owner=None, lease_ms=30_000)
        finally:
            await store.aclose()

    anyio.run(leave_one_pending_in_each_region)
    worker = tether_command(tmp_path, "worker", "--once")
    assert worker.returncode == 0, worker.stderr
    for region, done in (("eu", ["acme-1", "acme-2"]), ("us", ["globex-2"])):
        assert column(tmp_path / f"{region}.db",
                      "SELECT run_id FROM runs WHERE status = 'completed' ORDER BY run_id") == done
    assert_only(tmp_path, "eu", "acme", {"acme-1", "acme-2"}, ("globex", "gina", "initech"))
    assert_only(tmp_path, "us", "globex", {"globex-2"}, ("acme", "alice", "initech"))
    listed = tether_command(tmp_path, "runs", "ls", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert "acme-1" in listed.stdout
    assert "acme-2" in listed.stdout
    assert "globex-2" not in listed.stdout
    verified = tether_command(tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_no_home_region_is_forbidden_over_http_and_rebuilt_the_same_on_replay() -> None:
    from tether.errors import error_from_json
    from tether.server._errors import status_for

    refusal = NoHomeRegion("no home", tenant="initech", resource="store")
    assert (refusal.code, status_for(refusal)) == ("residency.no_home_region", 403)
    replayed = error_from_json(refusal.to_json())
    assert isinstance(replayed, NoHomeRegion)
    assert replayed.to_json() == refusal.to_json()

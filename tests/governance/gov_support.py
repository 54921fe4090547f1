"""Helpers for the governance tests: a copy of the test policies to edit, a governance built
on it, and a support agent whose model asks for the calls a test scripts."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import anyio
from click.testing import CliRunner

import tether
from tether.agents import ToolLoop
from tether.cli import cli
from tether.governance import Governance, GovernanceConfig
from tether.store import AUDIT_GENESIS, SQLiteStore, chain_hash
from tether.testing import FakeClock, ScriptedModel
from tether.types import Reply, ToolCall

POLICIES = Path(__file__).resolve().parent / "policies"


def policy_copy(tmp_path: Path) -> Path:
    """The test policies copied to ``tmp_path/policies`` (tests may edit them)."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def governance(tmp_path: Path, *, clock: FakeClock | None = None, **config: object,
               ) -> Governance:
    """Governance over a fresh copy of the test policies, audit files in ``tmp_path``."""
    policy_dir = tmp_path / "policies"
    if not policy_dir.exists():
        policy_copy(tmp_path)
    settings = GovernanceConfig(policy_dir=policy_dir, audit_dir=tmp_path / "audit",
                                reload_check_seconds=0.001, **config)  # type: ignore[arg-type]
    return Governance(settings, clock=clock)


REFUNDS: list[dict[str, object]] = []


@tether.tool(side_effects=False)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up."""
    return {"order_id": order_id, "paid": 900}


@tether.tool(idempotent=True)
def refund(order_id: str, amount: int) -> str:
    """Refund an order."""
    REFUNDS.append({"order_id": order_id, "amount": amount})
    return f"refunded {amount} on {order_id}"


@tether.tool()
def delete_account(user: str) -> str:
    """Delete a user's account."""
    return f"deleted {user}"


TOOLS = [lookup_order, refund, delete_account]


def calls(*items: tuple[str, dict[str, object]], text: str | None = None) -> Reply:
    """A model reply asking for these tool calls."""
    return Reply(text=text, tool_calls=[ToolCall(name, args, f"call-{i}")
                                        for i, (name, args) in enumerate(items)])


def support_agent(script: list[Reply], *, name: str = "support") -> tuple[tether.Agent, ScriptedModel]:
    """An agent (named ``name``) running a tool loop over ``script`` with all three tools."""
    model = ScriptedModel(script)
    loop = ToolLoop(model, tools=TOOLS, system="You are a support agent.")

    async def fn(ctx: tether.Context, question: str) -> str:
        return await loop.run(ctx, question)

    fn.__name__ = name
    return tether.agent(tools=TOOLS, name=name, version="1")(fn), model


HERE = Path(__file__).resolve().parent


class Env:
    """A project directory with a tether.toml that turns governance on."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        policy_copy(tmp_path)
        self.db = tmp_path / "tether.db"
        self.ledger = tmp_path / "ledger.jsonl"
        (tmp_path / "tether.toml").write_text(
            f'[runtime]\ndb = "sqlite:///{self.db}"\npoll_interval_seconds = 0.05\n\n'
            '[governance]\npolicy_dir = "policies"\naudit_dir = "audit"\n')

    def env(self, principal: str = "alice") -> dict[str, str]:
        return {"TETHER_PRINCIPAL": principal, "TETHER_TENANT": "acme",
                "GOV_LEDGER": str(self.ledger)}

    def cli(self, *args: str, principal: str = "alice") -> tuple[int, str, str]:
        old = os.getcwd()
        os.chdir(self.root)
        try:
            result = CliRunner().invoke(cli, list(args), env=self.env(principal))
        finally:
            os.chdir(old)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    def process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real entry point in its own process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update(self.env(), PYTHONPATH=str(HERE))
        return subprocess.run([sys.executable, "-m", "tether", *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=60, check=False)


def on_store(project: Env, use: Callable[[Governance, SQLiteStore], Awaitable[None]]) -> None:
    """Run ``use`` with the project's governance and its SQLite store open (closed after,
    which commits what was written lazily)."""

    async def main() -> None:
        gov = Governance.from_config(project.root / "tether.toml")
        assert gov is not None
        store = SQLiteStore(project.db)
        await store.open()
        try:
            await use(gov, store)
        finally:
            await store.aclose()

    anyio.run(main)


def rewrite(project: Env, idx: int, old: str, new: str, tenant: str = "acme") -> None:
    """Edit record ``idx`` of the tenant's chain (``old`` to ``new`` in its body) and compute
    every hash from there again, as someone with write access to the database can: each link
    still holds, only a signed checkpoint shows the change."""
    with closing(sqlite3.connect(project.db)) as conn:
        rows = conn.execute("SELECT idx, body FROM audit WHERE tenant = ? ORDER BY idx",
                            (tenant,)).fetchall()
        previous = AUDIT_GENESIS
        for at, body in rows:
            if at == idx:
                body = body.replace(old, new)
            previous = chain_hash(previous, body)
            conn.execute("UPDATE audit SET body = ?, hash = ? WHERE tenant = ? AND idx = ?",
                         (body, previous, tenant, at))
        conn.commit()

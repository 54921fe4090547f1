"""Helpers for the governance tests: a copy of the test policies to edit, a governance built
on it, and a support agent whose model asks for the calls a test scripts."""

from __future__ import annotations

import shutil
from pathlib import Path

import tether
from tether.agents import ToolLoop
from tether.governance import Governance, GovernanceConfig
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

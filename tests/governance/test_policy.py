"""PolicyEngine: default deny, fail closed, the intersection of principal and agent, approval
rules, tool listing, and reloading when the files change."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from gov_support import policy_copy

from tether.errors import PolicyInvalid
from tether.governance import PolicyEngine


def call(engine: PolicyEngine, principal: str, tool: str, agent: str | None = "support",
         **args: Any) -> Any:
    return engine.authorize(
        principal=principal, agent=agent, action="call_tool", resource=tool,
        context={"args": args, "run": {"id": "r", "agent": agent or "", "tenant": "acme",
                                       "principal": principal},
                 "approval": {"granted": False, "approver": ""}})


@pytest.fixture
def engine(tmp_path: Path) -> PolicyEngine:
    return PolicyEngine(policy_copy(tmp_path), reload_check_seconds=0)


CASES = [
    # (principal, agent, tool, args, effect, deciding policies)
    ("alice", "support", "lookup_order", {"order_id": "A-1"}, "allow",
     {"support-staff-use-support-tools", "support-agent-grant"}),
    ("alice", "support", "refund", {"order_id": "A-1", "amount": 20}, "allow",
     {"support-staff-use-support-tools", "support-agent-grant"}),
    ("alice", "support", "refund", {"order_id": "A-1", "amount": 900}, "approval",
     {"refunds-over-500-need-approval"}),
    ("alice", "support", "refund", {"order_id": "BLOCKED-7", "amount": 20}, "deny",
     {"no-refunds-for-blocked-orders"}),
    ("alice", "support", "delete_account", {}, "deny", set()),   # default deny
    ("carol", "support", "lookup_order", {}, "deny", set()),     # principal lacks the role
    ("alice", "rogue", "lookup_order", {}, "deny", set()),       # agent lacks the grant
    ("ci", "support", "lookup_order", {}, "allow",
     {"support-staff-use-support-tools", "support-agent-grant"}),  # service accounts too
    ("root", None, "delete_account", {"user": "x"}, "allow", {"admins-use-admin-tools"}),
    # Confused deputy: root may delete accounts, but not through an agent never granted that.
    ("root", "support", "delete_account", {"user": "x"}, "deny", set()),
]


@pytest.mark.parametrize(("principal", "agent", "tool", "args", "effect", "policies"), CASES)
def test_decisions_name_the_policies_that_made_them(
        engine: PolicyEngine, principal: str, agent: str | None, tool: str,
        args: dict[str, Any], effect: str, policies: set[str]) -> None:
    decision = call(engine, principal, tool, agent, **args)
    assert decision.effect == effect, decision.reason
    assert set(decision.policies) == policies
    assert decision.bundle
    assert not decision.errors


def test_a_forbid_that_fails_to_evaluate_denies_though_cedar_allowed(engine: PolicyEngine) -> None:
    """The fail-open trap: the blocked-orders forbid errors on a numeric order id (``like``
    needs a string), Cedar skips it and allows; the engine denies and records why."""
    import cedarpy

    bundle = engine.bundle()
    raw = cedarpy.is_authorized(
        {"principal": {"type": "User", "id": "alice"},
         "action": {"type": "Action", "id": "call_tool"},
         "resource": {"type": "Tool", "id": "refund"},
         "context": {"args": {"order_id": 12345, "amount": 1},
                     "run": {"id": "r", "agent": "", "tenant": "", "principal": ""},
                     "approval": {"granted": False, "approver": ""}}},
        bundle.policies, bundle.entities)
    assert raw.allowed
    assert raw.diagnostics.errors
    decision = call(engine, "alice", "refund", None, order_id=12345, amount=1)
    assert decision.effect == "deny"
    assert any("no-refunds-for-blocked-orders" in error for error in decision.errors)
    assert "failed to evaluate" in decision.reason


def test_unknown_principals_and_agents_are_refused(engine: PolicyEngine) -> None:
    assert "unknown principal 'mallory'" in call(engine, "mallory", "lookup_order").reason
    assert "agent 'ghost' is not declared" in call(engine, "alice", "lookup_order", "ghost").reason
    decision = engine.authorize(principal="gina", tenant="acme", action="start_run",
                                resource="support", context={})
    assert decision.effect == "deny"
    assert "belongs to tenant 'globex'" in decision.reason


def test_the_model_is_shown_only_tools_the_run_could_call(engine: PolicyEngine) -> None:
    tools = ["lookup_order", "refund", "delete_account"]
    assert engine.visible_tools(principal="alice", agent="support", tools=tools) == {
        "lookup_order", "refund"}
    assert engine.visible_tools(principal="carol", agent="support", tools=tools) == set()
    assert engine.visible_tools(principal="root", agent=None, tools=tools) == set(tools)
    assert engine.visible_tools(principal="mallory", agent=None, tools=tools) == set()


def test_an_approval_satisfies_only_the_approval_forbids(engine: PolicyEngine) -> None:
    approved = engine.authorize(
        principal="alice", agent="support", action="call_tool", resource="refund",
        context={"args": {"order_id": "BLOCKED-1", "amount": 900},
                 "run": {"id": "r", "agent": "support", "tenant": "acme", "principal": "alice"},
                 "approval": {"granted": True, "approver": "bob"}}, approved_by="bob")
    assert approved.effect == "deny"
    assert approved.policies == ("no-refunds-for-blocked-orders",)


def test_edited_policies_are_reloaded(tmp_path: Path) -> None:
    policy_dir = policy_copy(tmp_path)
    engine = PolicyEngine(policy_dir, reload_check_seconds=0)
    assert call(engine, "carol", "lookup_order", None).effect == "deny"
    path = policy_dir / "extra.cedar"
    path.write_text('@id("carol-looks")\npermit (principal == User::"carol", '
                    'action == Action::"call_tool", resource == Tool::"lookup_order");\n')
    assert call(engine, "carol", "lookup_order", None).effect == "allow"
    assert engine.reloads == 2
    call(engine, "carol", "lookup_order", None)
    assert engine.reloads == 2  # unchanged files are not parsed again


def test_files_that_stop_loading_deny_everything_until_fixed(tmp_path: Path) -> None:
    policy_dir = policy_copy(tmp_path)
    engine = PolicyEngine(policy_dir, reload_check_seconds=0)
    assert call(engine, "alice", "lookup_order").effect == "allow"
    good = (policy_dir / "tools.cedar").read_text()
    (policy_dir / "tools.cedar").write_text(good + "\npermit (principal, action, resource")
    decision = call(engine, "alice", "lookup_order")
    assert decision.effect == "deny"
    assert "tools.cedar" in decision.errors[0]
    (policy_dir / "tools.cedar").write_text(good)
    os.utime(policy_dir / "tools.cedar", ns=(1, 1))  # a different mtime, whatever the clock
    assert call(engine, "alice", "lookup_order").effect == "allow"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "schema.cedarschema").unlink(), "exactly one *.cedarschema"),
    (lambda d: (d / "x.cedar").write_text('permit (principal, action, resource);'),
     "needs an @id"),
    (lambda d: (d / "x.cedar").write_text('@id("a")\n@approval\npermit (principal, action, resource);'),
     "belongs on a forbid"),
    (lambda d: (d / "x.cedar").write_text(
        '@id("support-agent-grant")\nforbid (principal, action, resource);'), "used twice"),
    (lambda d: (d / "x.cedar").write_text(
        '@id("typo")\npermit (principal, action == Action::"call_tool", resource) '
        'when { context.args.amont > 1 };'), "does not match the schema"),
    (lambda d: (d / "entities.json").write_text(
        '[{"uid": {"type": "User", "id": "x"}, "attrs": {}, "parents": []}]'),
     "do not match the schema"),
])
def test_doubtful_policy_files_are_refused_naming_the_problem(
        tmp_path: Path, change: Any, message: str) -> None:
    policy_dir = policy_copy(tmp_path)
    change(policy_dir)
    with pytest.raises(PolicyInvalid, match=message.replace("*", r"\*")):
        PolicyEngine(policy_dir).check()


def _with_principals(policy_dir: Path, *entities: dict[str, Any]) -> None:
    """Let users and service accounts go without a tenant or be marked global, and add
    ``entities`` (as a deployment with operators that serve every tenant would)."""
    schema = policy_dir / "schema.cedarschema"
    schema.write_text(schema.read_text()
                      .replace("entity User in [Role] { tenant: Tenant };",
                               "entity User in [Role] { tenant?: Tenant, global?: Bool };")
                      .replace("entity ServiceAccount in [Role] { tenant: Tenant };",
                               "entity ServiceAccount in [Role] { tenant?: Tenant, "
                               "global?: Bool };"))
    path = policy_dir / "entities.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), *entities]))


def _user(name: str, **attrs: Any) -> dict[str, Any]:
    return {"uid": {"type": "User", "id": name}, "attrs": attrs,
            "parents": [{"type": "Role", "id": "supervisor"}]}


def test_a_principal_without_a_tenant_acts_in_no_tenant_unless_marked_global(
        tmp_path: Path) -> None:
    policy_dir = policy_copy(tmp_path)
    _with_principals(policy_dir, _user("drifter"), _user("operator", **{"global": True}),
                     _user("pinned", tenant={"__entity": {"type": "Tenant", "id": "acme"}},
                           **{"global": False}))
    engine = PolicyEngine(policy_dir, reload_check_seconds=0)

    def read(principal: str, tenant: str) -> Any:
        return engine.authorize(principal=principal, tenant=tenant, action="read_run",
                                resource="r1", context={"run": {
                                    "id": "r1", "agent": "support", "tenant": tenant,
                                    "principal": "alice"}})

    for tenant in ("acme", "globex"):
        refused = read("drifter", tenant)
        assert refused.effect == "deny"
        assert f"'drifter' has no tenant attribute, so it may act in no tenant ({tenant!r}" \
            in refused.reason
        assert '"global": true' in refused.reason
        assert read("operator", tenant).effect == "allow"
    assert read("pinned", "acme").effect == "allow"
    assert "belongs to tenant 'acme'" in read("pinned", "globex").reason


def test_a_global_principal_with_a_tenant_is_refused_as_ambiguous(tmp_path: Path) -> None:
    policy_dir = policy_copy(tmp_path)
    _with_principals(policy_dir, _user(
        "both", tenant={"__entity": {"type": "Tenant", "id": "acme"}}, **{"global": True}))
    with pytest.raises(PolicyInvalid, match="'both' has a tenant and is marked"):
        PolicyEngine(policy_dir, reload_check_seconds=0).check()

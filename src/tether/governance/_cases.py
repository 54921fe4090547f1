"""Table-driven policy tests (``tether policy test CASES.toml``).

    [[case]]
    name = "support may refund small amounts"
    principal = "alice"
    agent = "support"          # optional: the agent acting for the principal
    action = "call_tool"
    resource = "refund"
    args = { amount = 20 }     # the call's arguments (context.args)
    expect = "allow"           # allow | deny | approval
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import read_toml
from tether.errors import UsageError
from tether.governance._policy import RESOURCE_TYPES, Decision, PolicyEngine
from tether.types import JSONObject

_EXPECT = ("allow", "deny", "approval")
_KEYS = {"name", "principal", "agent", "action", "resource", "args", "context", "tenant",
         "expect", "approved_by"}


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    expected: str
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.decision.effect == self.expected


def _case(path: Path, number: int, raw: Any) -> JSONObject:
    where = f"{path} case {number}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: each [[case]] must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise UsageError(f"{where}: unknown keys {', '.join(sorted(unknown))}; known: "
                         + ", ".join(sorted(_KEYS)))
    for key in ("principal", "action", "resource", "expect"):
        if not isinstance(raw.get(key), str):
            raise UsageError(f"{where}: {key} is required (a string)")
    if raw["action"] not in RESOURCE_TYPES:
        raise UsageError(f"{where}: action must be one of {', '.join(RESOURCE_TYPES)}")
    if raw["expect"] not in _EXPECT:
        raise UsageError(f"{where}: expect must be one of {', '.join(_EXPECT)}")
    return raw


def run_cases(engine: PolicyEngine, path: Path) -> list[CaseResult]:
    """Decide every case of the file.

    Raises:
        UsageError: the file is not valid TOML or a case is malformed (naming which).
    """
    document = read_toml(path, "cases file")
    cases = document.get("case")
    if not isinstance(cases, list) or not cases:
        raise UsageError(f"{path}: no cases; write each as a [[case]] table")
    results = []
    for number, raw in enumerate(cases, start=1):
        case = _case(path, number, raw)
        principal, agent = case["principal"], case.get("agent")
        approved_by = case.get("approved_by")
        context: JSONObject = {
            "run": {"id": "case", "agent": agent or "", "tenant": case.get("tenant", ""),
                    "principal": principal}, **case.get("context", {})}
        if case["action"] in ("call_tool", "approve"):
            context["args"] = case.get("args", {})
        if case["action"] == "call_tool":
            context["approval"] = {"granted": approved_by is not None,
                                   "approver": approved_by or ""}
        decision = engine.authorize(principal=principal, agent=agent, action=case["action"],
                                    resource=case["resource"], context=context,
                                    tenant=case.get("tenant"), approved_by=approved_by)
        results.append(CaseResult(str(case.get("name", f"case {number}")), case["expect"],
                                  decision))
    return results

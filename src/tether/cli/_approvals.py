"""``tether approvals ls|approve|deny``: the inbox of tool calls held for a person."""

from __future__ import annotations

import datetime
import json

import click

from tether.cli import _remote
from tether.cli._common import CLIState, echo_json, fail, run_async
from tether.cli._remote import remote_of, server_options
from tether.governance import Governance
from tether.store import Approval, open_store


def _governance(state: CLIState) -> Governance:
    governance = state.governance()
    if governance is None:
        fail("usage: approvals need [governance] in tether.toml (the policies decide who may "
             "approve)")
    return governance


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S")


@click.group("approvals")
def approvals_group() -> None:
    """List, approve and deny tool calls waiting for a person."""


@approvals_group.command("ls")
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "expired", "all"]),
              default="pending", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@server_options
@click.pass_obj
def approvals_ls(state: CLIState, status: str, limit: int, as_json: bool, server: str | None,
                 api_key_env: str) -> None:
    """Show requests: the call, its arguments and the model message that asked for it."""
    remote = remote_of(server, api_key_env)

    async def main() -> list[Approval]:
        store = open_store(state.settings())
        await store.open()
        try:
            return await store.list_approvals(status=None if status == "all" else status,
                                              limit=limit)
        finally:
            await store.aclose()

    approvals = (run_async(main) if remote is None
                 else _remote.list_approvals(remote, status=status, limit=limit))
    if as_json:
        echo_json([approval.to_json() for approval in approvals])
        return
    if not approvals:
        click.echo("no approvals" + ("" if status == "all" else f" {status}"))
        return
    for approval in approvals:
        data = approval.to_json()
        message = data["message"] or {}
        click.echo(f"{approval.approval_id}  {approval.status}  {approval.tool}"
                   f"({json.dumps(data['args'], sort_keys=True)})")
        click.echo(f"    run {approval.run_id} agent {approval.agent} for {approval.principal} "
                   f"(tenant {approval.tenant}); held by {', '.join(data['policies'])}")
        if message.get("text"):
            click.echo(f"    the model said: {message['text']}")
        click.echo(f"    requested {_when(approval.requested_at_ms)} UTC, expires "
                   f"{_when(approval.expires_at_ms)} UTC")
        if approval.decided_by:
            click.echo(f"    {approval.status} by {approval.decided_by} at "
                       f"{_when(approval.decided_at_ms)} UTC: {approval.reason}")


def _decide(state: CLIState, approval_id: str, approve: bool, reason: str,
            principal: str | None, server: str | None, api_key_env: str) -> Approval:
    remote = remote_of(server, api_key_env, principal=principal)
    if remote is not None:
        return _remote.decide(remote, approval_id, approve=approve, reason=reason)
    governance = _governance(state)
    settings = state.settings()
    by = principal or settings.principal

    async def main() -> Approval:
        store = open_store(settings)
        await store.open()
        try:
            return await governance.decide_approval(store, approval_id, approve=approve, by=by,
                                                    reason=reason)
        finally:
            await store.aclose()

    return run_async(main)


_REASON = click.option("--reason", required=True, help="Why; it goes on the record.")
_PRINCIPAL = click.option("--principal", default=None,
                          help="Who decides (default: the principal setting, TETHER_PRINCIPAL).")


@approvals_group.command("approve")
@click.argument("approval_id")
@_REASON
@_PRINCIPAL
@server_options
@click.pass_obj
def approvals_approve(state: CLIState, approval_id: str, reason: str,
                      principal: str | None, server: str | None, api_key_env: str) -> None:
    """Approve a held call; its run goes on (`tether worker` resumes it)."""
    approval = _decide(state, approval_id, True, reason, principal, server, api_key_env)
    click.echo(f"approval {approval.approval_id} approved by {approval.decided_by}; run "
               f"{approval.run_id} will go on")


@approvals_group.command("deny")
@click.argument("approval_id")
@_REASON
@_PRINCIPAL
@server_options
@click.pass_obj
def approvals_deny(state: CLIState, approval_id: str, reason: str,
                   principal: str | None, server: str | None, api_key_env: str) -> None:
    """Deny a held call; the agent gets a policy refusal for it."""
    approval = _decide(state, approval_id, False, reason, principal, server, api_key_env)
    click.echo(f"approval {approval.approval_id} denied by {approval.decided_by}; run "
               f"{approval.run_id} will go on without it")

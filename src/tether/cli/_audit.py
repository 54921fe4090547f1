"""``tether audit verify|checkpoint|key|export|tail``: check and read the audit trail."""

from __future__ import annotations

import json
import sys

import anyio
import click

from tether.cli import _remote
from tether.cli._common import EXIT_FAILED, CLIState, echo_json, fail, run_async
from tether.cli._remote import remote_of, server_options
from tether.governance import (
    AuditReport,
    Governance,
    GovernanceConfig,
    audit_report,
    checkpoint_verifier,
    load_governance_config,
    public_key_text,
)
from tether.store import AuditRow, Store, open_store

_NO_GOVERNANCE = ("usage: the audit trail needs [governance] in tether.toml (its keys and "
                  "checkpoints live in audit_dir)")


def _governance(state: CLIState) -> Governance:
    governance = state.governance()
    if governance is None:
        fail(_NO_GOVERNANCE)
    return governance


def _row_json(row: AuditRow) -> dict[str, object]:
    return {"tenant": row.tenant, "idx": row.idx, "hash": row.hash,
            "record": json.loads(row.body)}


async def _tenants(store: Store, tenant: str | None) -> list[str]:
    return [tenant] if tenant is not None else await store.audit_tenants()


@click.group("audit")
def audit_group() -> None:
    """Verify, export and follow the hash-chained audit trail."""


@audit_group.command("verify")
@click.option("--allow-unanchored", is_flag=True,
              help="Exit 0 even when records are not covered by a signed checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@server_options
@click.pass_obj
def audit_verify(state: CLIState, allow_unanchored: bool, as_json: bool, server: str | None,
                 api_key_env: str) -> None:
    """Recompute every chain and check it against the signed checkpoints.

    Records no checkpoint covers (a tenant with none, or a tail past the last one) are
    "unanchored": their chain holds, but a rewritten or shortened chain would look the same.

    Exit status: 0 intact and anchored; 1 tampered (naming the first bad record of each
    tenant whose records were edited, deleted, inserted or reordered, or whose tail was cut
    off behind a checkpoint), or unanchored records without --allow-unanchored; 2 bad usage.
    With --server, the server checks the key's tenant's chain.
    """
    remote = remote_of(server, api_key_env)
    # Only the config and the public key: a machine that verifies needs no private key.
    async def main() -> tuple[GovernanceConfig, AuditReport]:
        config = load_governance_config(state.config)
        if config is None:
            fail(_NO_GOVERNANCE)
        public = checkpoint_verifier(config)
        store = open_store(state.settings())
        await store.open()
        try:
            return config, await audit_report(store, public, config.checkpoints_path)
        finally:
            await store.aclose()

    if remote is None:
        config, report = run_async(main)
        pinned = config.checkpoint_public_key is not None
    else:
        report, pinned = _remote.audit_verification(remote)
    problems, unanchored = report.problems, report.unanchored
    if as_json:
        echo_json({"records": report.records, "intact": not problems,
                   "anchored": not unanchored,
                   "key": "pinned" if pinned else "checkpoint.pub",
                   "problems": [{"tenant": p.tenant, "record": p.idx, "message": p.message}
                                for p in problems],
                   "unanchored": [{"tenant": u.tenant, "first": u.first, "last": u.last}
                                  for u in unanchored]})
    else:
        for problem in problems:
            click.echo(f"tampered: {problem}", err=True)
        for gap in unanchored:
            click.echo(f"unanchored: {gap}; once you trust them, sign a checkpoint with "
                       "`tether audit checkpoint`"
                       + ("" if allow_unanchored else " (or pass --allow-unanchored)"), err=True)
        if not problems and unanchored:
            loose = sum(u.last - u.first + 1 for u in unanchored)
            click.echo(f"links hold: {report.records} records, {loose} of them unanchored "
                       "(no signed checkpoint vouches for them)")
        elif not problems:
            click.echo(f"intact: {report.records} records, every link and checkpoint holds")
        if not pinned:
            click.echo("note: checkpoints were checked with audit_dir/checkpoint.pub; pin the "
                       "key in [governance] checkpoint_public_key (see `tether audit key`)",
                       err=True)
    sys.exit(EXIT_FAILED if problems or (unanchored and not allow_unanchored) else 0)


@audit_group.command("key")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
@click.pass_obj
def audit_key(state: CLIState, as_json: bool) -> None:
    """Print the public key checkpoints are signed with, to pin in tether.toml.

    Put the line it prints in the [governance] table (on the machines that verify, at
    least): `tether audit verify` then trusts that key, not the file beside the private one.
    """
    keys = _governance(state).audit.keys
    text = public_key_text(keys.public)
    if as_json:
        echo_json({"checkpoint_public_key": text, "key_id": keys.key_id})
    else:
        click.echo(f'checkpoint_public_key = "{text}"  # key id {keys.key_id}')


@audit_group.command("checkpoint")
@click.pass_obj
def audit_checkpoint(state: CLIState) -> None:
    """Sign a checkpoint of every tenant's chain now.

    A runtime signs one when it closes; after a crash (or with records written by other
    means) this anchors the tail, so cutting it off is caught by `tether audit verify`.
    """
    governance = _governance(state)

    async def main() -> int:
        store = open_store(state.settings())
        await store.open()
        try:
            return await governance.checkpoint_all(store)
        finally:
            await store.aclose()

    written = run_async(main)
    click.echo(f"signed {written} checkpoint{'s' if written != 1 else ''} "
               f"({governance.config.checkpoints_path})")


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl",
              show_default=True)
@click.option("--tenant", default=None, help="Only this tenant's chain.")
@click.pass_obj
def audit_export(state: CLIState, fmt: str, tenant: str | None) -> None:
    """Print every record, one JSON object per line (tenant, idx, hash, record)."""
    del fmt  # jsonl is the one format so far

    async def main() -> None:
        store = open_store(state.settings())
        await store.open()
        try:
            for name in await _tenants(store, tenant):
                after = 0
                while rows := await store.load_audit(name, after_idx=after, limit=1000):
                    for row in rows:
                        click.echo(json.dumps(_row_json(row), sort_keys=True))
                    after = rows[-1].idx
        finally:
            await store.aclose()

    run_async(main)


@audit_group.command("tail")
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--tenant", default=None, help="Only this tenant's chain.")
@click.option("--follow", is_flag=True, help="Keep printing new records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def audit_tail(state: CLIState, count: int, tenant: str | None, follow: bool,
               as_json: bool) -> None:
    """Print the last records (of every tenant, or one), and with --follow the new ones."""
    settings = state.settings()

    def show(row: AuditRow) -> None:
        if as_json:
            click.echo(json.dumps(_row_json(row), sort_keys=True))
            return
        record = json.loads(row.body)
        decision = record.get("decision") or {}
        what = record.get("name") or decision.get("resource", "")
        verdict = decision.get("effect") or (record.get("outcome") or {}).get("status") \
            or record.get("status", "")
        policies = ",".join(decision.get("policies") or [])
        click.echo(f"{row.tenant} #{row.idx} {record.get('type')} {record.get('kind') or ''} "
                   f"{what} {verdict} principal={record.get('principal', '')} "
                   f"run={record.get('run_id', '')}" + (f" policies={policies}" if policies else ""))

    async def main() -> None:
        store = open_store(settings)
        await store.open()
        try:
            last: dict[str, int] = {}
            for name in await _tenants(store, tenant):
                head = await store.audit_head(name)
                start = max(0, (head.idx if head else 0) - count)
                for row in await store.load_audit(name, after_idx=start):
                    show(row)
                    last[name] = row.idx
            while follow:
                await anyio.sleep(settings.poll_interval_seconds)
                for name in await _tenants(store, tenant):
                    for row in await store.load_audit(name, after_idx=last.get(name, 0)):
                        show(row)
                        last[name] = row.idx
        finally:
            await store.aclose()

    run_async(main)

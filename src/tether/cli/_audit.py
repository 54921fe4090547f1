"""``tether audit verify|export|tail``: check and read the audit trail."""

from __future__ import annotations

import json
import sys

import anyio
import click

from tether.cli._common import EXIT_FAILED, CLIState, echo_json, fail, run_async
from tether.governance import Governance, Problem, load_public_key, verify
from tether.store import AuditRow, Store, open_store


def _governance(state: CLIState) -> Governance:
    governance = state.governance()
    if governance is None:
        fail("usage: the audit trail needs [governance] in tether.toml (its keys and "
             "checkpoints live in audit_dir)")
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
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_obj
def audit_verify(state: CLIState, as_json: bool) -> None:
    """Recompute every chain and check it against the signed checkpoints.

    Exit status: 0 intact; 1 tampered (naming the first bad record of each tenant whose
    records were edited, deleted, inserted or reordered, or whose tail was cut off behind a
    checkpoint); 2 bad usage.
    """
    config = _governance(state).config
    public = load_public_key(config.audit_dir / "checkpoint.pub")

    async def main() -> tuple[int, list[Problem]]:
        store = open_store(state.settings())
        await store.open()
        try:
            return await verify(store, public, config.checkpoints_path)
        finally:
            await store.aclose()

    checked, problems = run_async(main)
    if as_json:
        echo_json({"records": checked, "intact": not problems,
                   "problems": [{"tenant": p.tenant, "record": p.idx, "message": p.message}
                                for p in problems]})
    elif problems:
        for problem in problems:
            click.echo(f"tampered: {problem}", err=True)
    else:
        click.echo(f"intact: {checked} records, every link and checkpoint holds")
    sys.exit(EXIT_FAILED if problems else 0)


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

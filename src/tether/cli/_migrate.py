"""``tether migrate``: move an embedded SQLite store to PostgreSQL."""

from __future__ import annotations

import time

import click

from tether.cli._common import fail, run_async
from tether.runtime import owner_is_dead
from tether.store import sqlite_path


@click.command("migrate")
@click.option("--from", "source", required=True, metavar="sqlite:///PATH",
              help="The SQLite store to copy (only read).")
@click.option("--to", "target", required=True, metavar="postgresql://...",
              help="The PostgreSQL database (?schema=NAME, default tether).")
@click.option("--force", is_flag=True,
              help="Move runs that live workers still hold (those workers must not be started "
                   "again on the file).")
def migrate_command(source: str, target: str, force: bool) -> None:
    """Copy runs, journals, waiting runs, signals, approvals and audit chains from an SQLite
    file to PostgreSQL in one transaction, then read everything back to verify it.

    Stop the workers on the file first. Afterwards start workers with --db TARGET: running
    runs resume by replay, waiting runs keep their timers and signals.
    """
    if not source.startswith("sqlite://"):
        fail(f"--from must be sqlite:///PATH, not {source!r}")
    if not target.startswith(("postgresql://", "postgres://")):
        fail(f"--to must be postgresql://USER@HOST:PORT/DB, not {target!r}")
    from tether.store._transfer import migrate_sqlite_to_postgres

    report = run_async(lambda: migrate_sqlite_to_postgres(
        sqlite_path(source), target, now_ms=int(time.time() * 1000),
        owner_is_dead=owner_is_dead, force=force))
    statuses = ", ".join(f"{count} {status}" for status, count in report.runs_by_status.items())
    click.echo(f"migrated {report.rows.get('runs', 0)} runs ({statuses or 'none'}), "
               f"{report.rows.get('journal', 0)} journal records, "
               f"{report.rows.get('signals', 0)} signals, {report.rows.get('approvals', 0)} "
               f"approvals, {report.rows.get('audit', 0)} audit records; verified")

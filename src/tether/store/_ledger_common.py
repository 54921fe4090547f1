"""What every engine shares about rate limits and budget ledgers: the GCRA step and the
refusal of an over-cap post (the ``Store.gcra`` and ``Store.ledger_post`` semantics)."""

from __future__ import annotations

import json

from tether.errors import BudgetExceeded
from tether.store._protocol import LedgerEntry


def gcra_step(tat_us: int | None, now_us: int, increment_us: int, limit_us: int,
              ) -> tuple[int | None, int]:
    """(the new TAT, or None when refused; microseconds to wait, 0 when admitted)."""
    new = max(tat_us if tat_us is not None else now_us, now_us) + increment_us
    wait = new - now_us - limit_us
    return (new, 0) if wait <= 0 else (None, wait)


def ordered(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """Entries by scope: concurrent posts lock rows in one order, so they never deadlock."""
    return sorted(entries, key=lambda entry: entry.scope)


def over_cap(entry: LedgerEntry, balance: int) -> BudgetExceeded:
    assert entry.cap is not None
    return BudgetExceeded(
        f"budget {entry.scope!r} is exhausted: {balance} of {entry.cap} spent, "
        f"{entry.amount} more asked", scope=entry.scope, limit=entry.cap, spent=balance,
        requested=entry.amount)


def entries_json(entries: list[LedgerEntry]) -> str:
    """A post's entries as kept in ``ledger_posts`` (what was charged where, for audits)."""
    return json.dumps([[e.scope, e.amount] for e in entries], separators=(",", ":"))

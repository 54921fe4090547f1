"""Rate limits and budget ledgers of ``MemoryStore`` (see ``Store.gcra`` and on)."""

from __future__ import annotations

from tether.store._ledger_common import gcra_step, ordered, over_cap
from tether.store._protocol import LedgerEntry


class MemoryLedger:
    """Mixed into ``MemoryStore``. One event loop and no awaits inside: each call is atomic."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}
        self._balances: dict[str, int] = {}
        self._posts: set[str] = set()

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        new, wait = gcra_step(self._tats.get(key), now_us, increment_us, limit_us)
        if new is not None:
            self._tats[key] = new
        return wait

    async def ledger_post(self, post_id: str, entries: list[LedgerEntry], *,
                          now_ms: int) -> bool:
        if post_id in self._posts:
            return False
        for entry in ordered(entries):
            balance = self._balances.get(entry.scope, 0)
            if entry.cap is not None and balance + entry.amount > entry.cap:
                raise over_cap(entry, balance)
        for entry in entries:
            self._balances[entry.scope] = self._balances.get(entry.scope, 0) + entry.amount
        self._posts.add(post_id)
        return True

    async def ledger_balances(self, scopes: list[str]) -> dict[str, int]:
        return {scope: self._balances.get(scope, 0) for scope in scopes}

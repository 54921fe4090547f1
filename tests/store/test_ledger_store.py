"""The store's rate-limit state and budget ledger (``Store.gcra``, ``ledger_post``,
``ledger_balances``), on every engine, including concurrent callers and a reopened store."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tether.errors import BudgetExceeded
from tether.store import LedgerEntry, Store

from .conftest import build_store

pytestmark = pytest.mark.anyio

SECOND_US = 1_000_000


async def test_gcra_admits_a_burst_then_refuses_with_the_wait(store: Store) -> None:
    # 10 per second, burst 10: emission 100 ms, limit 1 s.
    results = [await store.gcra("k", now_us=0, increment_us=100_000, limit_us=SECOND_US)
               for _ in range(11)]
    assert results[:10] == [0] * 10
    assert results[10] == 100_000
    assert await store.gcra("k", now_us=100_000, increment_us=100_000, limit_us=SECOND_US) == 0
    assert await store.gcra("other", now_us=0, increment_us=100_000, limit_us=SECOND_US) == 0


async def test_gcra_never_admits_a_cost_above_the_limit(store: Store) -> None:
    assert await store.gcra("k", now_us=0, increment_us=2 * SECOND_US, limit_us=SECOND_US) > 0
    assert await store.gcra("k", now_us=0, increment_us=SECOND_US, limit_us=SECOND_US) == 0


async def test_concurrent_gcra_callers_are_admitted_exactly_up_to_the_limit(
        store: Store) -> None:
    admitted = 0

    async def caller() -> None:
        nonlocal admitted
        if await store.gcra("shared", now_us=0, increment_us=10_000, limit_us=SECOND_US) == 0:
            admitted += 1

    async with anyio.create_task_group() as group:
        for _ in range(150):
            group.start_soon(caller)
    assert admitted == 100


# Scopes start with their tenant, as the budget stage writes them (a routed store needs it).
RUN, DAY, SCOPE = "tenant:acme:run:r1:steps", "tenant:acme:2026-11-26:steps", "tenant:acme:s"


async def test_a_post_is_all_or_nothing(store: Store) -> None:
    assert await store.ledger_post("p1", [LedgerEntry(RUN, 5, cap=10),
                                          LedgerEntry(DAY, 5, cap=6)], now_ms=1)
    with pytest.raises(BudgetExceeded) as caught:
        await store.ledger_post("p2", [LedgerEntry(RUN, 3, cap=10),
                                       LedgerEntry(DAY, 3, cap=6)], now_ms=2)
    assert caught.value.scope == DAY
    assert (caught.value.limit, caught.value.spent, caught.value.requested) == (6, 5, 3)
    assert await store.ledger_balances([RUN, DAY, "tenant:acme:never"]) == {
        RUN: 5, DAY: 5, "tenant:acme:never": 0}


async def test_a_post_id_applies_once(store: Store) -> None:
    assert await store.ledger_post("hold", [LedgerEntry(SCOPE, 4, cap=10)], now_ms=1)
    assert not await store.ledger_post("hold", [LedgerEntry(SCOPE, 4, cap=10)], now_ms=2)
    assert await store.ledger_post("settle", [LedgerEntry(SCOPE, -1)], now_ms=3)
    assert await store.ledger_balances([SCOPE]) == {SCOPE: 3}


async def test_concurrent_posts_never_pass_the_cap(store: Store) -> None:
    refused = 0

    async def post(i: int) -> None:
        nonlocal refused
        try:
            await store.ledger_post(f"p{i}", [LedgerEntry(SCOPE, 1, cap=10)], now_ms=i)
        except BudgetExceeded:
            refused += 1

    async with anyio.create_task_group() as group:
        for i in range(50):
            group.start_soon(post, i)
    assert refused == 40
    assert await store.ledger_balances([SCOPE]) == {SCOPE: 10}


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "routed"])  # memory:// keeps nothing
async def test_balances_and_limits_survive_reopening(engine: str, tmp_path: Path) -> None:
    first = build_store(engine, tmp_path)
    await first.open()
    try:
        await first.ledger_post("p", [LedgerEntry(SCOPE, 7, cap=10)], now_ms=1)
        await first.gcra("k", now_us=0, increment_us=SECOND_US, limit_us=SECOND_US)
    finally:
        await first.aclose()
    second = build_store(engine, tmp_path)
    await second.open()
    try:
        assert await second.ledger_balances([SCOPE]) == {SCOPE: 7}
        with pytest.raises(BudgetExceeded):
            await second.ledger_post("q", [LedgerEntry(SCOPE, 4, cap=10)], now_ms=2)
        assert await second.gcra("k", now_us=0, increment_us=SECOND_US, limit_us=SECOND_US) > 0
    finally:
        await second.aclose()

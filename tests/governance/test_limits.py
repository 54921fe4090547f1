"""Rate limits: GCRA never admits more than its rate, queued calls are served fairly across
tenants, and a call that cannot be admitted in time fails with ``RateLimited``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gov_support import calls, governance, support_agent
from hypothesis import given, settings
from hypothesis import strategies as st

import tether
from conftest import fast_settings
from tether.errors import ConfigError, RateLimited, RunFailed
from tether.governance import LocalLimits, RateLimit, RateLimiter, RateLimitStage
from tether.governance._limits import _bucket
from tether.testing import FakeClock
from tether.types import Reply

pytestmark = pytest.mark.anyio

MINUTE_US = 60_000_000


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 600), burst=st.integers(1, 50),
       calls_made=st.lists(st.tuples(st.integers(0, 2_000_000), st.integers(1, 5)),
                           min_size=1, max_size=200))
def test_gcra_never_admits_more_than_its_rate(rate: int, burst: int,
                                              calls_made: list[tuple[int, int]]) -> None:
    """In any window of W seconds, admitted units <= burst + rate * W / 60 (plus one unit of
    rounding to whole microseconds)."""
    state = LocalLimits()
    clock = FakeClock(start_ms=0)
    limit = RateLimit(name="r", requests_per_minute=rate, burst=burst)
    admitted: list[tuple[int, int]] = []
    now_us = 0

    async def drive() -> None:
        nonlocal now_us
        for gap_us, cost in calls_made:
            now_us += gap_us
            bucket = _bucket(limit, "requests", {}, cost, rate, burst)
            if await state.gcra("k", now_us=now_us, increment_us=bucket.increment_us,
                                limit_us=bucket.limit_us) == 0:
                admitted.append((now_us, cost))

    asyncio.run(drive())
    del clock
    for i, (start, _) in enumerate(admitted):
        total = 0
        for at, cost in admitted[i:]:
            total += cost
            window_us = at - start
            assert total <= burst + rate * window_us / MINUTE_US + 1e-6 * rate + 1


async def test_over_the_limit_a_call_fails_with_the_retry_after() -> None:
    clock = FakeClock(start_ms=0)
    limiter = RateLimiter(clock, LocalLimits())
    limit = RateLimit(name="rpm", requests_per_minute=60, burst=2)
    bucket = _bucket(limit, "requests", {}, 1, 60, 2)
    await limiter.acquire(bucket, "acme")
    await limiter.acquire(bucket, "acme")
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(bucket, "acme")
    assert caught.value.retry_after_seconds == pytest.approx(1.0)
    assert caught.value.code == "limit.rate"
    clock.advance(1.0)
    await limiter.acquire(bucket, "acme")


async def test_queued_calls_are_served_in_turn_across_tenants() -> None:
    """Tenant A queues 20 calls before tenant B queues 4 on one shared model limit: B's calls
    are admitted interleaved with A's, not after all of A's."""
    clock = FakeClock(start_ms=0)
    limiter = RateLimiter(clock, LocalLimits())
    limit = RateLimit(name="model", requests_per_minute=60, burst=1, max_wait_seconds=3600)
    bucket = _bucket(limit, "requests", {}, 1, 60, 1)
    order: list[str] = []

    async def call(tenant: str) -> None:
        await limiter.acquire(bucket, tenant)
        order.append(tenant)

    await limiter.acquire(bucket, "warm-up")  # the bucket is now empty: everyone queues
    tasks = [asyncio.ensure_future(call("a")) for _ in range(20)]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(call("b")) for _ in range(4)]
    await asyncio.gather(*tasks)
    assert order.count("b") == 4
    # Each of B's calls is admitted within two turns of the previous one.
    assert [i for i, tenant in enumerate(order) if tenant == "b"] == [1, 3, 5, 7]
    assert clock.now_ms() == pytest.approx(24_000, abs=1_000)  # one per second throughout


async def test_a_queued_call_past_its_maximum_wait_fails() -> None:
    clock = FakeClock(start_ms=0)
    limiter = RateLimiter(clock, LocalLimits())
    limit = RateLimit(name="slow", requests_per_minute=6, burst=1, max_wait_seconds=15)
    bucket = _bucket(limit, "requests", {}, 1, 6, 1)
    await limiter.acquire(bucket, "acme")
    # One waits 10 s (within 15) and is admitted; the other would wait 20 s and is refused.
    outcomes = await asyncio.gather(limiter.acquire(bucket, "acme"),
                                    limiter.acquire(bucket, "acme"), return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], RateLimited)
    assert clock.now_ms() == 10_000


def test_limits_are_validated_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="requests_per_minute and/or tokens_per_minute"):
        RateLimit(name="x")
    with pytest.raises(ConfigError, match="unknown dimension 'user'"):
        RateLimit(name="x", per=("user",), requests_per_minute=1)


async def test_a_rate_limited_call_is_journaled_and_the_agent_sees_it(
        tmp_path: Path, db_url: str) -> None:
    """Shared state in the store: the second model call of the minute is refused with
    RateLimited, recorded as that call's outcome."""
    gov = governance(tmp_path, limits=(RateLimit(name="per-tenant", per=("tenant",),
                                                 requests_per_minute=1, kinds=frozenset({"llm"})),))
    assert any(isinstance(stage, RateLimitStage) for stage in gov.stages())
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A1"})), Reply(text="done")])
    async with tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                              stages=gov.stages()) as rt:
        handle = await rt.start(agent, {"question": "where is A1?"})
        with pytest.raises(RunFailed):
            await handle.result()
        run = await rt.get(handle.run_id)
        assert run.error is not None
        assert run.error["code"] == "limit.rate"
        records = [r.to_json() for r in await rt.journal(handle.run_id)]
        refused = [r for r in records if r["state"] == "error"]
        assert refused[-1]["kind"] == "llm"
        assert refused[-1]["value"]["code"] == "limit.rate"
        assert refused[-1]["value"]["retry_after_seconds"] > 0

"""Rate limits: requests and tokens per minute, keyed by any of tenant, principal, agent,
model and tool, with the generic cell rate algorithm (GCRA).

GCRA is a token bucket kept as one number per key, the *theoretical arrival time* (TAT): a
call of cost ``c`` moves it ``c * T`` forward (``T`` = one unit's share of the minute) and is
admitted while the TAT stays within ``burst * T`` of now. One integer per key makes the state
cheap to share: in the store (``Store.gcra``: one atomic statement on PostgreSQL, one writer
transaction on SQLite), so a limit holds across every worker, or in process
(``LocalLimits``) when a single process is the whole deployment.

Over the limit a call either fails at once with ``RateLimited`` (``max_wait_seconds = 0``)
or queues. Queued calls are served round-robin *by tenant*: a tenant with a hundred calls
waiting on a shared model limit does not starve one with two, each gets a turn in rotation.
A call that could not be admitted within its maximum wait fails with ``RateLimited``
carrying the retry-after.

    [[governance.limits]]
    name = "model-rpm"
    per = ["model"]              # any of tenant, principal, agent, model, tool
    requests_per_minute = 600
    tokens_per_minute = 200000   # model calls only: worst case (input estimate + max_tokens)
    max_wait_seconds = 10
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether._clock import Clock
from tether.errors import ConfigError, RateLimited
from tether.governance._budget import worst_case_tokens
from tether.runtime import Effect, Handler
from tether.store import Store, gcra_step

DIMENSIONS = ("tenant", "principal", "agent", "model", "tool")
_MINUTE_US = 60_000_000


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    """One ``[[governance.limits]]`` entry."""

    name: str
    """Names the limit in errors and keys; changing it starts the limit afresh."""
    per: tuple[str, ...] = ()
    """What the limit is kept per (each distinct value its own bucket); empty: one bucket."""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    """Model calls only, charged their worst case before the call."""
    burst: float | None = None
    """How many units may go at once after a quiet spell (default: a whole minute's worth)."""
    max_wait_seconds: float = 0.0
    """How long a call over the limit may queue; 0 fails it at once with ``RateLimited``."""
    match: Mapping[str, str] = field(default_factory=dict)
    """Only calls with these values (``{model = "gpt-4o"}``); empty: every call."""
    kinds: frozenset[str] = frozenset({"llm", "tool"})
    """Effect kinds counted against ``requests_per_minute``."""

    def __post_init__(self) -> None:
        where = f"governance.limits {self.name!r}"
        if not self.name:
            raise ConfigError("every [[governance.limits]] needs a name")
        for dim in (*self.per, *self.match):
            if dim not in DIMENSIONS:
                raise ConfigError(f"{where}: unknown dimension {dim!r}; use any of "
                                  + ", ".join(DIMENSIONS))
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ConfigError(f"{where}: set requests_per_minute and/or tokens_per_minute")
        for value in (self.requests_per_minute, self.tokens_per_minute, self.burst):
            if value is not None and value <= 0:
                raise ConfigError(f"{where}: rates and burst must be positive")
        if self.max_wait_seconds < 0:
            raise ConfigError(f"{where}: max_wait_seconds must not be negative")
        if not self.kinds <= {"llm", "tool"}:
            raise ConfigError(f"{where}: kinds are llm and tool")


class LimitState(Protocol):
    """Where TATs live: ``Store.gcra``'s contract."""

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int: ...


class LocalLimits:
    """TATs in this process only: for one-process deployments, tests and benchmarks."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        new, wait = gcra_step(self._tats.get(key), now_us, increment_us, limit_us)
        if new is not None:
            self._tats[key] = new
        return wait


@dataclass(frozen=True, slots=True)
class _Bucket:
    limit: str
    key: str
    increment_us: int
    limit_us: int
    max_wait_seconds: float


class _Waiter:
    __slots__ = ("bucket", "deadline", "future")

    def __init__(self, bucket: _Bucket, deadline: float,
                 future: asyncio.Future[None]) -> None:
        self.bucket, self.deadline, self.future = bucket, deadline, future


class _Gate:
    """The calls queued on one bucket, one line per tenant, served in rotation."""

    def __init__(self) -> None:
        self.lines: collections.OrderedDict[str, collections.deque[_Waiter]] = (
            collections.OrderedDict())
        self.pump: asyncio.Task[None] | None = None

    def waiting(self) -> bool:
        return any(self.lines.values())


def _bucket_key(rule: RateLimit, what: str, values: Mapping[str, str]) -> str:
    return "rl:" + rule.name + ":" + what + "".join(
        f"|{dim}={values.get(dim, '')}" for dim in rule.per)


class RateLimiter:
    """Admits calls against GCRA buckets, queueing fairly across tenants.

    Args:
        clock: wall time for the TATs (shared state needs the same clock in every worker)
            and the sleeps of queued calls.
        state: where TATs live; None: in the store of each call's run.
    """

    def __init__(self, clock: Clock, state: LimitState | None = None) -> None:
        self._clock = clock
        self._state = state
        self._gates: dict[str, _Gate] = {}

    async def acquire(self, bucket: _Bucket, tenant: str, store: Store | None = None) -> None:
        """Return once the call is admitted; raise ``RateLimited`` when it cannot be in time."""
        state: LimitState | None = self._state or store
        assert state is not None, "a store, or a state of its own"
        gate = self._gates.get(bucket.key)
        if gate is None or not gate.waiting():  # nobody queued: no turn to wait for
            wait_us = await self._take(state, bucket)
            if wait_us == 0:
                return
            if bucket.increment_us > bucket.limit_us or wait_us / 1e6 > bucket.max_wait_seconds:
                raise _refused(bucket, wait_us)
            if gate is None:
                gate = self._gates[bucket.key] = _Gate()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gate.lines.setdefault(tenant, collections.deque()).append(
            _Waiter(bucket, self._clock.monotonic() + bucket.max_wait_seconds, future))
        if gate.pump is None or gate.pump.done():
            gate.pump = asyncio.get_running_loop().create_task(self._pump(gate, state))
        try:
            await future
        finally:
            future.cancel()  # the caller was cancelled: its place in line is given up

    async def _take(self, state: LimitState, bucket: _Bucket) -> int:
        return await state.gcra(bucket.key, now_us=self._clock.now_ms() * 1000,
                                increment_us=bucket.increment_us, limit_us=bucket.limit_us)

    async def _pump(self, gate: _Gate, state: LimitState) -> None:
        """Serve the head of each tenant's line in turn, sleeping out the bucket's wait."""
        while True:
            turn = self._next(gate)
            if turn is None:
                return
            tenant, head = turn
            try:
                wait_us = await self._take(state, head.bucket)
            except Exception as exc:  # noqa: BLE001 - the store failed: the caller hears of it
                if not head.future.done():
                    head.future.set_exception(exc)
                continue
            if wait_us == 0:
                if not head.future.done():
                    head.future.set_result(None)
                continue
            # Not yet: back to the front of its line, and its tenant keeps the turn.
            gate.lines.setdefault(tenant, collections.deque()).appendleft(head)
            gate.lines.move_to_end(tenant, last=False)
            ready_at = self._clock.monotonic() + wait_us / 1e6
            for line in gate.lines.values():
                for waiter in [w for w in line if w.deadline < ready_at]:
                    line.remove(waiter)
                    if not waiter.future.done():
                        waiter.future.set_exception(_refused(waiter.bucket, wait_us))
            if not gate.waiting():
                return
            await self._clock.sleep(wait_us / 1e6)
            await asyncio.sleep(0)  # let callers that arrived meanwhile take their place in line

    @staticmethod
    def _next(gate: _Gate) -> tuple[str, _Waiter] | None:
        """The next tenant in rotation and the head of its line, taken off the line for its
        attempt (the tenant goes to the back of the turn)."""
        while gate.lines:
            tenant, line = next(iter(gate.lines.items()))
            while line and line[0].future.done():  # callers cancelled meanwhile
                line.popleft()
            if not line:
                del gate.lines[tenant]
                continue
            gate.lines.move_to_end(tenant)
            return tenant, line.popleft()
        return None


def _refused(bucket: _Bucket, wait_us: int) -> RateLimited:
    if bucket.increment_us > bucket.limit_us:
        return RateLimited(
            f"rate limit {bucket.limit!r}: one call costs more than the limit's whole burst, "
            "so it can never be admitted; raise the limit's burst", limit=bucket.limit,
            key=bucket.key, retry_after_seconds=math.inf)
    after = round(wait_us / 1e6, 3)
    return RateLimited(f"rate limit {bucket.limit!r} ({bucket.key}) is exhausted; retry after "
                       f"{after} s", limit=bucket.limit, key=bucket.key,
                       retry_after_seconds=after)


def effect_dimensions(effect: Effect) -> dict[str, str]:
    """The values a limit (or a budget) may be kept per, for one effect."""
    run = effect.scope.run
    values = {"tenant": run.tenant, "principal": run.principal, "agent": run.agent}
    values["model" if effect.kind == "llm" else "tool"] = effect.name
    return values


class RateLimitStage:
    """The rate-limit stage: each matching limit admits the call (or queues or refuses it)
    before it may act. A refusal is journaled as the call's outcome, so a replay sees it."""

    kinds: frozenset[str] | None = frozenset({"llm", "tool"})

    def __init__(self, limits: Sequence[RateLimit], limiter: RateLimiter, *,
                 default_max_tokens: int = 4096) -> None:
        self.limits = tuple(limits)
        self.limiter = limiter
        self._default_max_tokens = default_max_tokens

    def buckets(self, effect: Effect) -> list[_Bucket]:
        """The buckets this call is charged to, in the limits' order."""
        values = effect_dimensions(effect)
        found: list[_Bucket] = []
        tokens: int | None = None
        for rule in self.limits:
            if any(values.get(dim) != want for dim, want in rule.match.items()):
                continue
            if any(dim not in values for dim in rule.per):
                continue  # a per-tool limit does not apply to a model call, and so on
            burst_of = rule.burst
            if rule.requests_per_minute is not None and effect.kind in rule.kinds:
                found.append(_bucket(rule, "requests", values, 1, rule.requests_per_minute,
                                     burst_of))
            if rule.tokens_per_minute is not None and effect.kind == "llm":
                if tokens is None:
                    tokens = sum(worst_case_tokens(effect.request, self._default_max_tokens))
                found.append(_bucket(rule, "tokens", values, tokens, rule.tokens_per_minute,
                                     burst_of))
        return found

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        buckets = self.buckets(effect)
        if buckets:
            store = effect.scope.journal.store
            for bucket in buckets:
                await self.limiter.acquire(bucket, effect.scope.run.tenant, store)
            effect.detail["rate_limits"] = [bucket.key for bucket in buckets]
        return await call_next(effect)


def _bucket(rule: RateLimit, what: str, values: Mapping[str, str], cost: int,
            per_minute: float, burst: float | None) -> _Bucket:
    emission_us = _MINUTE_US / per_minute
    return _Bucket(rule.name, _bucket_key(rule, what, values),
                   max(1, round(cost * emission_us)),
                   round((burst if burst is not None else per_minute) * emission_us),
                   rule.max_wait_seconds)

"""``RoutedStore``: one ``Store`` over several, one per region; a tenant's data only in its own.

With ``[regions.NAME] db = "..."`` configured (``tether.config.Regions``), each tenant has a
home region (the first of its ``[governance.residency]`` regions that has a store). Everything
of a tenant is written only to its home region's store: its runs with their journals and
signals, its approvals, its audit chain and its budget ledger. A tenant with no home is
refused (``NoHomeRegion``) before anything of it is written anywhere: fail closed.

How each call finds its store:

* **By tenant**: ``create_run`` (``NewRun.tenant``), the audit chain, approvals requested,
  ledger posts and balances (every budget scope starts ``tenant:NAME:``; a scope without one
  is refused, since it could not be told apart from another tenant's), and rate-limit state
  whose key is kept per tenant (``|tenant=NAME``).
* **By run id**: every later call on a run goes to the store that holds it. A bounded map
  ``run_id -> region`` is filled when a run is created, claimed or read; on a miss each store
  is asked.
* **Everywhere**: ``claim_runs`` claims from every store, sharing its limit fairly (equal
  shares, the remainder rotating, what one store leaves unused offered to the others);
  ``list_runs`` and ``list_approvals`` merge in their order; ``next_wake_ms`` is the
  earliest; ``count_runnable`` the sum; ``watch``, ``open``, ``aclose`` and ``release`` reach
  every store.

Rate-limit state kept across tenants (a limit per model, say) goes to the first region
configured: such a bucket must live in exactly one place to hold across workers, and its key
names a limit and a model or tool, not a tenant's data. Keep ``tenant`` in a limit's ``per``
to keep its state in each tenant's own region.

Each store stays atomic on its own; nothing here spans two. A run's child has its parent's
tenant, so a child's outcome reaches its parent inside one store. A conversation thread whose
runs sit in two regions is refused when read rather than mixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from tether.errors import LeaseLost, NoHomeRegion, ResidencyViolation, RunNotFound, UsageError
from tether.store._protocol import (
    Approval,
    AuditRow,
    Claim,
    Commit,
    Created,
    LedgerEntry,
    Missing,
    NewRun,
    OwnerIsDead,
    Record,
    Store,
    Waker,
)
from tether.types import JSONObject, Run, RunStatus

logger = logging.getLogger("tether.store")

T = TypeVar("T")

RUN_MAP_SIZE = 200_000
"""Run ids whose region is remembered; the least recently used is forgotten first (and asked
for again). A run in flight writes at every step, so it stays remembered."""


class RoutedStore:
    """Keeps each tenant's data in its home region's store; see the module docstring.

    Args:
        stores: each region's store (unopened), in configured order.
        homes: each tenant's home region.
    """

    def __init__(self, stores: Mapping[str, Store], homes: Mapping[str, str]) -> None:
        if not stores:
            raise UsageError("a routed store needs at least one region's store")
        for tenant, region in homes.items():
            if region not in stores:
                raise UsageError(f"tenant {tenant!r} lives in region {region!r}, which has "
                                 "no store")
        self._stores = dict(stores)
        self._homes = dict(homes)
        self._first = next(iter(self._stores))
        self._where: dict[str, str] = {}
        self._turn = 0  # whose turn it is to get the remainder of a claim's limit
        self.location = "regions " + ", ".join(
            f"{region}={store.location}" for region, store in self._stores.items())

    # -- finding the store -----------------------------------------------------------------

    def home(self, tenant: str) -> str:
        """The tenant's home region; ``NoHomeRegion`` when it has none."""
        region = self._homes.get(tenant)
        if region is None:
            regions = list(self._stores)
            raise NoHomeRegion(
                f"tenant {tenant!r} has no home region, so its data may be kept in none of "
                f"the regions with stores ({', '.join(regions)}); list its regions under "
                f"[governance.residency] tenants, e.g. {tenant} = [\"{regions[0]}\"]",
                tenant=tenant, resource="store", region=None, allowed=[])
        return region

    def _remember(self, run_id: str, region: str) -> None:
        """Put the run last in the map (least recently used first out)."""
        if self._where.pop(run_id, None) is None and len(self._where) >= RUN_MAP_SIZE:
            del self._where[next(iter(self._where))]
        self._where[run_id] = region

    async def _region_of(self, run_id: str, regions: Iterable[str] | None = None,
                         ) -> str | None:
        """The region holding the run, asking every store (of ``regions``) on a miss; None:
        no store has it."""
        region = self._where.get(run_id)
        if region is not None:
            self._remember(run_id, region)
            return region
        found = await self._each(lambda _, store: store.get_run(run_id), regions)
        for region, run in found.items():
            if run is not None:
                self._remember(run_id, region)
                return region
        return None

    async def _holder(self, run_id: str) -> Store:
        """The store holding the run, for a call that needs the run (``RunNotFound``)."""
        region = await self._region_of(run_id)
        if region is None:
            raise RunNotFound(run_id)
        return self._stores[region]

    async def _owner_store(self, run_id: str) -> Store:
        """The store holding the run, for a fenced write (``LeaseLost``, as every engine)."""
        region = await self._region_of(run_id)
        if region is None:
            raise LeaseLost(run_id)
        return self._stores[region]

    async def _each(self, call: Callable[[str, Store], Awaitable[T]],
                    regions: Iterable[str] | None = None) -> dict[str, T]:
        """``call(region, store)`` on every store (or those of ``regions``) at once."""
        names = list(self._stores if regions is None else regions)
        results = await asyncio.gather(*(call(name, self._stores[name]) for name in names))
        return dict(zip(names, results, strict=True))

    def _tenant_of_scope(self, scope: str) -> str:
        kind, _, rest = scope.partition(":")
        tenant = rest.partition(":")[0]
        if kind != "tenant" or not tenant:
            raise UsageError(f"ledger scope {scope!r} names no tenant: with stores by region "
                             "every scope starts with tenant:NAME: so that it is kept in that "
                             "tenant's region")
        return tenant

    def _region_of_key(self, key: str) -> str:
        for part in key.split("|")[1:]:
            if part.startswith("tenant="):
                return self.home(part.removeprefix("tenant="))
        return self._first

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        opened: list[Store] = []
        try:
            for store in self._stores.values():
                await store.open()
                opened.append(store)
        except BaseException:
            for store in opened:
                await store.aclose()
            raise

    async def aclose(self) -> None:
        failure: BaseException | None = None
        for store in self._stores.values():
            try:
                await store.aclose()
            except Exception as exc:  # noqa: BLE001 - close the others, then report the first
                failure = failure or exc
        if failure is not None:
            raise failure

    def watch(self, wake: Waker) -> None:
        for store in self._stores.values():
            store.watch(wake)

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun, *, now_ms: int, owner: str | None,
                         lease_ms: int) -> Created:
        home = self.home(new.tenant)
        # An id taken in another region is that run (ids are unique across regions, as in one
        # store): starting it again returns it instead of making a second one elsewhere. The
        # home store answers for its own ids itself.
        region = await self._region_of(
            new.run_id, [region for region in self._stores if region != home]) or home
        created = await self._stores[region].create_run(new, now_ms=now_ms, owner=owner,
                                                        lease_ms=lease_ms)
        self._remember(new.run_id, region)
        return created

    async def claim_runs(self, *, owner: str, now_ms: int, lease_ms: int, limit: int,
                         owner_is_dead: OwnerIsDead, run_ids: list[str] | None = None,
                         ) -> list[Claim]:
        wanted: dict[str, list[str] | None]
        if run_ids is None:
            wanted = dict.fromkeys(self._stores)
        else:
            named: dict[str, list[str]] = {}
            for run_id in run_ids:
                region = await self._region_of(run_id)
                if region is not None:
                    named.setdefault(region, []).append(run_id)
            wanted = {region: named[region] for region in self._stores if region in named}
        if not wanted or limit <= 0:
            return []
        regions = list(wanted)
        self._turn = (self._turn + 1) % len(regions)
        regions = regions[self._turn:] + regions[:self._turn]
        base, extra = divmod(limit, len(regions))
        shares = {region: base + (1 if i < extra else 0) for i, region in enumerate(regions)}

        async def claim(region: str, share: int) -> list[Claim]:
            claimed = await self._stores[region].claim_runs(
                owner=owner, now_ms=now_ms, lease_ms=lease_ms, limit=share,
                owner_is_dead=owner_is_dead, run_ids=wanted[region])
            for each in claimed:
                self._remember(each.run.run_id, region)
            return claimed

        asked = [region for region in regions if shares[region]]
        first = await asyncio.gather(*(claim(region, shares[region]) for region in asked),
                                     return_exceptions=True)
        claims: list[Claim] = []
        failed: list[BaseException] = []
        more = [region for region in regions if not shares[region]]  # may have runs to give
        for region, result in zip(asked, first, strict=True):
            if isinstance(result, BaseException):
                failed.append(result)
                continue
            claims.extend(result)
            if len(result) == shares[region]:
                more.append(region)
        for region in more:  # what the others left unused, offered in turn
            left = limit - len(claims)
            if left <= 0:
                break
            try:
                claims.extend(await claim(region, left))
            except Exception as exc:  # noqa: BLE001 - keep what the other regions gave
                failed.append(exc)
        if failed and not claims:
            raise failed[0]
        for failure in failed:
            # What the other regions gave is returned, never dropped (those runs are claimed
            # now): a region that is away holds up only its own runs.
            logger.warning("cannot claim runs in one region: %s", failure)
        return claims

    async def heartbeat(self, *, owner: str, run_ids: list[str], now_ms: int,
                        lease_ms: int) -> list[str]:
        by_region: dict[str, list[str]] = {}
        lost: list[str] = []
        for run_id in run_ids:
            region = await self._region_of(run_id)
            if region is None:
                lost.append(run_id)
            else:
                by_region.setdefault(region, []).append(run_id)
        found = await self._each(
            lambda region, store: store.heartbeat(owner=owner, run_ids=by_region[region],
                                                  now_ms=now_ms, lease_ms=lease_ms), by_region)
        return lost + [run_id for gone in found.values() for run_id in gone]

    def forget_claim(self, run_id: str, fence: int) -> None:
        region = self._where.get(run_id)
        for name in [region] if region is not None else self._stores:
            self._stores[name].forget_claim(run_id, fence)

    async def release(self, *, owner: str) -> None:
        await self._each(lambda _, store: store.release(owner=owner))

    async def finish_run(self, run_id: str, fence: int, *, status: RunStatus,
                         result: str | None, error: str | None, now_ms: int) -> None:
        store = await self._owner_store(run_id)
        await store.finish_run(run_id, fence, status=status, result=result, error=error,
                               now_ms=now_ms)

    async def suspend_run(self, run_id: str, fence: int, *, wake_at_ms: int | None,
                          waiting_for: str | None, now_ms: int) -> bool:
        store = await self._owner_store(run_id)
        return await store.suspend_run(run_id, fence, wake_at_ms=wake_at_ms,
                                       waiting_for=waiting_for, now_ms=now_ms)

    async def cancel_run(self, run_id: str, *, reason: JSONObject, now_ms: int) -> Run:
        store = await self._holder(run_id)
        return await store.cancel_run(run_id, reason=reason, now_ms=now_ms)

    async def resolve_run(self, run_id: str, *, action: str, value: str | None,
                          now_ms: int) -> Run:
        store = await self._holder(run_id)
        return await store.resolve_run(run_id, action=action, value=value, now_ms=now_ms)

    async def get_run(self, run_id: str) -> Run | None:
        region = await self._region_of(run_id)
        return None if region is None else await self._stores[region].get_run(run_id)

    async def list_runs(self, *, status: RunStatus | None = None, limit: int = 100,
                        agent: str | None = None, tenant: str | None = None,
                        before: tuple[int, str] | None = None) -> list[Run]:
        home = self._homes.get(tenant) if tenant is not None else None
        found = await self._each(
            lambda _, store: store.list_runs(status=status, limit=limit, agent=agent,
                                             tenant=tenant, before=before),
            None if home is None else [home])
        runs = [run for page in found.values() for run in page]
        runs.sort(key=lambda run: (run.created_at_ms, run.run_id), reverse=True)
        return runs[:limit]

    async def next_wake_ms(self) -> int | None:
        found = await self._each(lambda _, store: store.next_wake_ms())
        return min((at for at in found.values() if at is not None), default=None)

    async def count_runnable(self, *, now_ms: int) -> int:
        found = await self._each(lambda _, store: store.count_runnable(now_ms=now_ms))
        return sum(found.values())

    # -- journal ---------------------------------------------------------------------------

    def append(self, run_id: str, fence: int, records: list[Record], commit: Commit,
               ) -> Awaitable[None] | None:
        # Synchronous, to keep submission order: only a run this store created or claimed
        # has a fence to write under, and those are in the map (the map forgets the oldest
        # of a great many, which no longer run here).
        region = self._where.get(run_id)
        if region is None:
            raise LeaseLost(run_id)
        self._remember(run_id, region)
        return self._stores[region].append(run_id, fence, records, commit)

    async def load_journal(self, run_id: str) -> list[Record]:
        region = await self._region_of(run_id)
        return [] if region is None else await self._stores[region].load_journal(run_id)

    async def load_thread(self, thread_id: str) -> list[JSONObject]:
        found = await self._each(lambda _, store: store.load_thread(thread_id))
        held = {region: messages for region, messages in found.items() if messages}
        if len(held) > 1:
            raise ResidencyViolation(
                f"thread {thread_id!r} has runs in regions {', '.join(held)}; a thread's "
                "messages are not moved between regions: keep a thread's runs in one tenant",
                resource=f"thread:{thread_id}", region=None, allowed=[])
        return next(iter(held.values()), [])

    # -- signals ---------------------------------------------------------------------------

    async def send_signal(self, run_id: str, name: str, data: str | None, *, now_ms: int) -> Run:
        store = await self._holder(run_id)
        return await store.send_signal(run_id, name, data, now_ms=now_ms)

    async def take_signal(self, run_id: str, fence: int, name: str, record: Record,
                          ) -> str | Missing:
        store = await self._owner_store(run_id)
        return await store.take_signal(run_id, fence, name, record)

    # -- audit trail and approvals ---------------------------------------------------------

    def append_audit(self, tenant: str, bodies: list[str], commit: Commit,
                     ) -> Awaitable[None] | None:
        return self._stores[self.home(tenant)].append_audit(tenant, bodies, commit)

    def _audit_regions(self, tenant: str) -> list[str]:
        """Where to read a tenant's chain: its home; for a tenant with none (no longer
        configured), every store, so what was kept of it is still found and verified."""
        home = self._homes.get(tenant)
        return list(self._stores) if home is None else [home]

    async def load_audit(self, tenant: str, *, after_idx: int = 0, limit: int | None = None,
                         ) -> list[AuditRow]:
        found = await self._each(
            lambda _, store: store.load_audit(tenant, after_idx=after_idx, limit=limit),
            self._audit_regions(tenant))
        return _one_chain(tenant, {region: rows for region, rows in found.items() if rows})

    async def audit_tenants(self) -> list[str]:
        found = await self._each(lambda _, store: store.audit_tenants())
        return sorted({tenant for tenants in found.values() for tenant in tenants})

    async def audit_head(self, tenant: str) -> AuditRow | None:
        found = await self._each(lambda _, store: store.audit_head(tenant),
                                 self._audit_regions(tenant))
        heads = {region: [row] for region, row in found.items() if row is not None}
        rows = _one_chain(tenant, heads)
        return rows[0] if rows else None

    async def request_approval(self, approval: Approval) -> Approval:
        return await self._stores[self.home(approval.tenant)].request_approval(approval)

    async def _approval_store(self, approval_id: str) -> Store | None:
        found = await self._each(lambda _, store: store.get_approval(approval_id))
        return next((self._stores[region] for region, approval in found.items()
                     if approval is not None), None)

    async def decide_approval(self, approval_id: str, *, status: str, by: str, reason: str,
                              now_ms: int) -> Approval:
        store = await self._approval_store(approval_id)
        # No store has it: the first answers with its own ApprovalNotFound.
        return await (store or self._stores[self._first]).decide_approval(
            approval_id, status=status, by=by, reason=reason, now_ms=now_ms)

    async def get_approval(self, approval_id: str) -> Approval | None:
        found = await self._each(lambda _, store: store.get_approval(approval_id))
        return next((approval for approval in found.values() if approval is not None), None)

    async def list_approvals(self, *, status: str | None = None, limit: int = 100,
                             ) -> list[Approval]:
        found = await self._each(lambda _, store: store.list_approvals(status=status,
                                                                       limit=limit))
        approvals = [approval for page in found.values() for approval in page]
        approvals.sort(key=lambda a: (a.requested_at_ms, a.approval_id))
        return approvals[:limit]

    # -- rate limits and budget ledgers ----------------------------------------------------

    async def gcra(self, key: str, *, now_us: int, increment_us: int, limit_us: int) -> int:
        return await self._stores[self._region_of_key(key)].gcra(
            key, now_us=now_us, increment_us=increment_us, limit_us=limit_us)

    async def ledger_post(self, post_id: str, entries: list[LedgerEntry], *,
                          now_ms: int) -> bool:
        tenants = {self._tenant_of_scope(entry.scope) for entry in entries}
        if len(tenants) != 1:
            raise UsageError(f"ledger post {post_id!r} must charge exactly one tenant's scopes "
                             f"(it names {len(tenants)}): a post is atomic only inside one "
                             "region's store")
        (tenant,) = tenants
        return await self._stores[self.home(tenant)].ledger_post(post_id, entries,
                                                                 now_ms=now_ms)

    async def ledger_balances(self, scopes: list[str]) -> dict[str, int]:
        by_region: dict[str, list[str]] = {}
        for scope in scopes:
            by_region.setdefault(self.home(self._tenant_of_scope(scope)), []).append(scope)
        found = await self._each(
            lambda region, store: store.ledger_balances(by_region[region]), by_region)
        balances = {scope: amount for part in found.values() for scope, amount in part.items()}
        return {scope: balances[scope] for scope in scopes}


def _one_chain(tenant: str, held: dict[str, list[AuditRow]]) -> list[AuditRow]:
    """The rows of the one region holding the tenant's chain; a chain in two is refused."""
    if len(held) > 1:
        raise ResidencyViolation(
            f"tenant {tenant!r} has audit records in regions {', '.join(held)}; a chain is "
            "kept in one region: give the tenant back its home region to read it",
            tenant=tenant, resource="audit", region=None, allowed=[])
    return next(iter(held.values()), [])

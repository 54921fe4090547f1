"""Small builders shared by the store tests: runs, records, claims, and writes that wait."""

from __future__ import annotations

from tether.store import Claim, Commit, NewRun, Record, RecordState, Store

T0 = 1_700_000_000_000
"""A fixed "now" (epoch milliseconds); tests move time by adding to it."""

LEASE_MS = 30_000
OWNER_A = "host-a:100:1000:aaaa0001"
OWNER_B = "host-b:200:2000:bbbb0002"
OWNER_C = "host-c:300:3000:cccc0003"


def nobody_is_dead(owner: str) -> bool:
    return False


def new_run(run_id: str, *, agent: str = "greeter", input_json: str = '{"name": "Ada"}',
            thread_id: str | None = None, parent_run_id: str | None = None) -> NewRun:
    return NewRun(run_id=run_id, agent=agent, agent_version="1", agent_ref=f"app:{agent}",
                  input=input_json, tenant="acme", principal="alice", thread_id=thread_id,
                  parent_run_id=parent_run_id)


def record(seq: int, state: str = RecordState.OK, *, kind: str = "tool", name: str = "lookup",
           value: str | None = None, attempts: int = 1, detail: str | None = None) -> Record:
    """A journal record; a final one gets a value and a finish time unless given."""
    final = state != RecordState.STARTED
    if value is None and final:
        value = f'"value {seq}"'
    return Record(seq=seq, kind=kind, name=name, digest=f"digest-{seq}", state=state,
                  value=value, attempts=attempts, started_at_ms=T0 + seq,
                  finished_at_ms=T0 + seq + 1 if final else None, detail=detail)


async def write(store: Store, run_id: str, fence: int, records: list[Record],
                commit: Commit = Commit.WAIT) -> None:
    """Append and, for ``Commit.WAIT``, wait until the records are durable."""
    pending = store.append(run_id, fence, records, commit)
    if pending is not None:
        await pending


async def create_claimed(store: Store, run_id: str, *, owner: str = OWNER_A, now_ms: int = T0,
                         lease_ms: int = LEASE_MS, thread_id: str | None = None,
                         parent_run_id: str | None = None) -> Claim:
    """Create a run already claimed by ``owner``."""
    created = await store.create_run(new_run(run_id, thread_id=thread_id,
                                             parent_run_id=parent_run_id),
                                     now_ms=now_ms, owner=owner, lease_ms=lease_ms)
    assert created.claim is not None
    return created.claim


async def claim_one(store: Store, run_id: str, *, owner: str = OWNER_B, now_ms: int = T0,
                    lease_ms: int = LEASE_MS) -> Claim:
    """Claim exactly this run, failing the test if it is not claimable."""
    claims = await store.claim_runs(owner=owner, now_ms=now_ms, lease_ms=lease_ms, limit=10,
                                    owner_is_dead=nobody_is_dead, run_ids=[run_id])
    assert [c.run.run_id for c in claims] == [run_id]
    return claims[0]


async def take_over(store: Store, run_id: str, *, owner: str = OWNER_B) -> Claim:
    """Let the current lease expire and claim the run for ``owner``."""
    return await claim_one(store, run_id, owner=owner, now_ms=T0 + 10 * LEASE_MS)

from __future__ import annotations

from collections.abc import Awaitable

from tether.errors import NonDeterminismError, StoreError
from tether.store import Commit, Record, Store


def describe(kind: str, name: str, digest: str) -> str:
    """How an effect is named in a non-determinism report."""
    return f"{kind} {name!r} (request digest {digest})"


class RunJournal:
    """One run's journal as this claim sees it: what was recorded, and the seq counter.

    A run is replayed by running its code again from the top. Each effect takes the next
    seq *synchronously* (before any await), so effects started in parallel get the same seqs
    on every replay. An effect whose seq is recorded returns the record instead of acting.
    """

    def __init__(self, store: Store, run_id: str, fence: int, records: list[Record], *,
                 lazy_limit: int = 64) -> None:
        self.store = store
        self.run_id = run_id
        self.fence = fence
        self._recorded = {record.seq: record for record in records}
        self.last_recorded_seq = max(self._recorded, default=0)
        """Past this seq nothing is recorded: effects there act without a lookup."""
        self._seq = 0
        self._lazy_limit = lazy_limit
        self._lazy_pending = 0  # lazy writes since this run last waited for a commit
        self.replayed = 0  # effects answered from the journal in this execution
        self.executed = 0  # effects that acted in this execution
        # Agent code may catch (and ignore) the errors below; the runtime must not, so the
        # journal remembers them: a refused write means abandon the run, a mismatch means
        # park it for a person, whatever the agent code did afterwards.
        self.write_failed: StoreError | None = None
        self.nondeterminism: NonDeterminismError | None = None

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def lookup(self, seq: int, kind: str, name: str, digest: str) -> Record | None:
        """The record at ``seq`` if there is one; raises if it is a different effect."""
        record = self._recorded.get(seq)
        if record is None:
            return None
        if record.kind != kind or record.name != name or record.digest != digest:
            self.nondeterminism = NonDeterminismError(
                self.run_id, seq, recorded=describe(record.kind, record.name, record.digest),
                attempted=describe(kind, name, digest))
            raise self.nondeterminism
        return record

    def lazy_commit(self) -> Commit:
        """``Commit.LAZY``, except that every ``lazy_limit``-th lazy write waits for its
        commit: a run never runs more than that many records ahead of the disk, however busy
        the writer is (a checkpointer's asynchronous mode was measured losing 110 steps of
        one run in a crash; here a crash loses at most ``lazy_limit`` records per run)."""
        self._lazy_pending += 1
        if self._lazy_pending < self._lazy_limit:
            return Commit.LAZY
        return Commit.WAIT

    def write(self, record: Record, commit: Commit) -> Awaitable[None] | None:
        """Record (or move forward) one effect; an awaitable when the caller must wait for
        durability (``Store.append``)."""
        if commit is Commit.WAIT:
            self._lazy_pending = 0  # a durable write commits every earlier one with it
        try:
            pending = self.store.append(self.run_id, self.fence, [record], commit)
        except StoreError as exc:
            self.write_failed = exc
            raise
        return None if pending is None else self._durable(pending)

    async def _durable(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except StoreError as exc:
            self.write_failed = exc
            raise

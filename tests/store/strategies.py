"""Hypothesis strategies for journal writes: random seqs, states and commit modes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import strategies as st

from tether.store import Commit, Record, RecordState

RUNS = ("run-a", "run-b")
STATES = (RecordState.STARTED, RecordState.OK, RecordState.ERROR)


@dataclass(frozen=True, slots=True)
class Append:
    """One ``Store.append`` call: a run, its records, and how soon they must be durable."""

    run_id: str
    records: tuple[Record, ...]
    commit: Commit


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)


KINDS = ("tool", "llm", "step", "wait")


@st.composite
def records(draw: st.DrawFn) -> Record:
    """A version of the record at a random seq. What identifies the effect (kind, name,
    digest, start time) follows from the seq; its state, value and attempts are random."""
    seq = draw(st.integers(1, 6))
    state = draw(st.sampled_from(STATES))
    final = state != RecordState.STARTED
    started = 1_700_000_000_000 + 1000 * seq
    return Record(
        seq=seq, kind=KINDS[seq % len(KINDS)], name=f"effect-{seq}", digest=f"d{seq}",
        state=state,
        value=json.dumps(draw(json_values)) if final or draw(st.booleans()) else None,
        attempts=draw(st.integers(1, 4)), started_at_ms=started,
        finished_at_ms=started + draw(st.integers(0, 1000)) if final else None,
        detail=draw(st.none() | json_values.map(json.dumps)))


appends = st.builds(Append, run_id=st.sampled_from(RUNS),
                    records=st.lists(records(), min_size=1, max_size=3).map(tuple),
                    commit=st.sampled_from(Commit))


def apply_forward_only(journal: dict[int, Record], batch: tuple[Record, ...],
                       ) -> dict[int, Record] | None:
    """The journal after ``batch``, or None when the store must refuse the whole batch
    (it would change a record that is already final)."""
    after = dict(journal)
    for record in batch:
        current = after.get(record.seq)
        if current is not None and current.state != RecordState.STARTED:
            return None
        after[record.seq] = record
    return after

"""Hypothesis strategies for the crash property test: random agent programs for
``crash_agents.program_agent`` and a point in each at which to SIGKILL its worker."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from .crash_agents import MAX_PROGRAM_STEPS

OPS = ("llm", "read", "write", "step", "now")
"""Model call, read-only tool, idempotent side-effecting tool, ``ctx.step``, ``ctx.now``."""


@dataclass(frozen=True)
class CrashPlan:
    """Run ``program``; kill the worker when it reaches op ``at`` (``len(program)``: just before
    the agent returns), either just before that op or, with ``inside``, while it executes."""

    program: tuple[str, ...]
    at: int
    inside: bool

    @property
    def hold_point(self) -> str:
        """The ``crash_agents`` hold point where the worker blocks to be killed."""
        if not self.inside:
            return f"before-{self.at}"
        if self.program[self.at] == "llm":
            return f"llm-{self.program[:self.at].count('llm')}"
        return f"inside-{self.at}"

    @property
    def records_at_crash(self) -> int:
        """Journal records committed when the worker is killed: one per earlier op, and the
        intent of a side-effecting tool cut mid-call."""
        return self.at + (1 if self.inside and self.program[self.at] == "write" else 0)


programs = st.lists(st.sampled_from(OPS), min_size=1, max_size=MAX_PROGRAM_STEPS).map(tuple)


@st.composite
def crash_plans(draw: st.DrawFn) -> CrashPlan:
    program = draw(programs)
    at = draw(st.integers(min_value=0, max_value=len(program)))
    # ctx.now does its work synchronously: there is no "inside" to stop at.
    inside = at < len(program) and program[at] != "now" and draw(st.booleans())
    return CrashPlan(program, at, inside)

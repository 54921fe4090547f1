"""The interpreter settings a runtime changes while open are put back when it closes."""

from __future__ import annotations

import gc
import sys

import pytest

import tether

pytestmark = pytest.mark.anyio


async def test_gc_and_switch_interval_are_tuned_while_open_and_restored_after() -> None:
    before = gc.get_threshold(), sys.getswitchinterval()
    settings = tether.Settings(db="memory://", gc_threshold=60_000, switch_interval_ms=0.25)
    async with tether.Runtime(settings=settings):
        assert gc.get_threshold()[0] == 60_000
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


async def test_zero_leaves_the_interpreter_alone() -> None:
    before = gc.get_threshold(), sys.getswitchinterval()
    settings = tether.Settings(db="memory://", gc_threshold=0, switch_interval_ms=0)
    async with tether.Runtime(settings=settings):
        assert (gc.get_threshold(), sys.getswitchinterval()) == before

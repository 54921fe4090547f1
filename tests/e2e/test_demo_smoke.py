"""`tether demo` as a user runs it: a real process that kills and resumes its own worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .harness import Processes, child_env

pytestmark = pytest.mark.anyio


async def test_demo_exits_zero_with_exactly_one_email_in_the_outbox(
        tmp_path: Path, processes: Processes) -> None:
    demo_dir = tmp_path / "demo"
    demo = processes.spawn([sys.executable, "-m", "tether", "demo", "--dir", str(demo_dir)],
                           env=child_env(tmp_path))
    assert await demo.finished(timeout=90) == 0, demo.describe()
    output = demo.stdout()
    assert "the outbox holds 1 e-mail(s)" in output, output
    assert "UNEXPECTED" not in output
    assert len((demo_dir / "outbox.jsonl").read_text().splitlines()) == 1

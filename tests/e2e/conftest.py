from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Processes


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start processes through this; each is stopped and reaped when the test ends, pass or fail."""
    directory = tmp_path / "procs"
    directory.mkdir()
    with Processes(directory) as group:
        yield group

"""Fixtures of the server tests: one ``tether serve`` process per module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .process import ServerProcess, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("serve"))
    yield process
    code = process.stop()
    assert code == 0, process.stderr()

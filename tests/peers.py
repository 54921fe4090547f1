"""Where the suite finds its real peers, and what happens when one is missing.

Locally a missing peer (PostgreSQL, the npm test servers, bubblewrap) skips the tests that need
it, with the reason. CI sets ``TETHER_TEST_REQUIRE_PEERS=1`` (``.ci/run``): there a missing peer
fails the test, so a broken CI machine cannot pass by skipping.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "node_modules" / ".bin"

REQUIRED = os.environ.get("TETHER_TEST_REQUIRE_PEERS") == "1"


def missing(reason: str) -> None:
    """Skip (locally) or fail (in CI) the calling test because a peer is unavailable."""
    if REQUIRED:
        pytest.fail(f"required test peer missing: {reason}")
    pytest.skip(reason)


def postgres_url() -> str:
    """The PostgreSQL server the tests may use (``TETHER_TEST_POSTGRES_URL``)."""
    url = os.environ.get("TETHER_TEST_POSTGRES_URL")
    if not url:
        missing("TETHER_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    assert url is not None
    return url


def node_bin(name: str) -> Path:
    """An executable installed from package.json (``npm ci``)."""
    path = NODE_BIN / name
    if not path.exists():
        missing(f"{path} not installed: run `npm ci` (make test does)")
    return path


def executable(name: str) -> str:
    """A program on PATH (bwrap, git, ...)."""
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    assert found is not None
    return found


def postgres_schema_url(name: str) -> str:
    """A URL for a PostgreSQL schema of its own (``drop_postgres_schema`` removes it)."""
    base = postgres_url()
    return f"{base}{'&' if '?' in base else '?'}schema={name}"


def drop_postgres_schema(name: str) -> None:
    """Remove a schema a test made, and everything in it."""
    import psycopg

    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def schema_for(directory: Path) -> str:
    """The PostgreSQL schema of a test's directory: a test that reopens its store finds its
    data again, and no two tests share one."""
    return "t_" + hashlib.sha256(str(directory).encode()).hexdigest()[:16]

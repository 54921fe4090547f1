"""A real scripted model server (aimock's ``llmock``) on a free loopback port, and model
configurations that reach it through the real OpenAI and Anthropic SDKs.

The server insists on an API key (``AIMOCK_API_KEYS``), and that key is a sentinel the leak
tests look for everywhere Tether writes. Each test sends its own ``X-Test-Id``, so aimock's
per-fixture sequence counters (429 first, then a reply) start afresh for every test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from peers import node_bin
from tether.models import ModelConfig, ModelRetry

from .provider_support import (
    FIXTURES,
    KEY_VARIABLE,
    MODEL_IDS,
    SENTINEL_KEY,
    MakeConfig,
    ModelServer,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/__aimock/journal", timeout=1):  # noqa: S310 - loopback http
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    """``llmock`` with the committed fixtures; stopped by pid at the end of the session."""
    llmock = node_bin("llmock")
    port = _free_port()
    process = subprocess.Popen(
        [str(llmock), "--host", "127.0.0.1", "--port", str(port), "--fixtures", str(FIXTURES),
         "--log-level", "warn"],
        env={**os.environ, "AIMOCK_API_KEYS": SENTINEL_KEY},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _answers(url):
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"llmock exited with {process.returncode}: "
                            f"{process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("llmock did not answer within 20 s")
            time.sleep(0.05)
        yield ModelServer(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def make_config(model_server: ModelServer, test_id: str,
                monkeypatch: pytest.MonkeyPatch) -> MakeConfig:
    """``make_config(provider, headers=..., retry=...)``: a model on the test server."""
    monkeypatch.setenv(KEY_VARIABLE, SENTINEL_KEY)

    def make(provider: str, *, headers: dict[str, str] | None = None,
             retry: ModelRetry | None = None, **changes: Any) -> ModelConfig:
        return ModelConfig(
            provider=provider, model=MODEL_IDS[provider],  # type: ignore[arg-type]
            base_url=model_server.base_url(provider), api_key_env=KEY_VARIABLE, timeout=10,
            headers={"x-test-id": test_id, **(headers or {})},
            retry=retry or ModelRetry(initial_delay=0.05, max_delay=5), **changes)
    return make

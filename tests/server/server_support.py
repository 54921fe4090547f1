"""An app over a real runtime and store, API keys on disk, and an httpx client talking to it
in process (the app's lifespan runs, so its event streams work)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette

import tether
from tether.config import Settings
from tether.governance import APIKeys, Governance
from tether.server import ServerOptions, create_app
from tether.server._serve import serving

from .server_agents import AGENTS, MODEL


@dataclass
class Served:
    runtime: tether.Runtime
    client: httpx.AsyncClient
    keys: APIKeys
    key: str
    """A key of principal alice, tenant acme."""
    app: Starlette

    def as_key(self, key: str) -> httpx.AsyncClient:
        """A second client over the same app, with another key."""
        return httpx.AsyncClient(transport=self.client._transport, base_url="http://tether",
                                 headers={"Authorization": f"Bearer {key}"})


@contextlib.asynccontextmanager
async def serve_in_process(db: str, tmp_path: Path, *, governance: Governance | None = None,
                           insecure: bool = False, poll_interval_seconds: float = 0.05,
                           ) -> AsyncIterator[Served]:
    keys = governance.api_keys if governance is not None else APIKeys(tmp_path / "keys.json")
    key = keys.issue("alice", "acme")
    settings = Settings(db=db, poll_interval_seconds=0.05, flush_interval_ms=5,
                        tenant="acme", principal="alice")
    stages = governance.stages() if governance is not None else []
    async with tether.Runtime(settings=settings, agents=AGENTS, models=[MODEL],
                              stages=stages) as runtime:
        app = create_app(runtime, ServerOptions(
            api_keys=None if insecure else keys, governance=governance, agents=AGENTS,
            insecure_no_auth=insecure, poll_interval_seconds=poll_interval_seconds,
            keepalive_seconds=1.0))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://tether",
                headers={"Authorization": f"Bearer {key}"}) as client:
            yield Served(runtime, client, keys, key, app)


@contextlib.asynccontextmanager
async def over_loopback(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    """The same app served by uvicorn on 127.0.0.1 (event streams need a real connection:
    the in-process transport buffers whole responses)."""
    async with serving(served.app, port=0, lifespan=False) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {served.key}"},
            timeout=httpx.Timeout(10, read=None)) as client:
        yield client

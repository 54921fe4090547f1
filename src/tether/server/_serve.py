"""Serve an app with uvicorn inside the caller's event loop, beside the runtime's workers."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator

import anyio
import uvicorn
from starlette.applications import Starlette

from tether.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def serving(app: Starlette, *, host: str = "127.0.0.1", port: int = 8000,
                  insecure_no_auth: bool = False, lifespan: bool = True) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields the base URL (``port=0`` picks a free one).
    ``lifespan=False`` when the caller already runs the app's lifespan.

    Raises:
        ConfigError: ``insecure_no_auth`` on an address other than loopback.
    """
    if insecure_no_auth and not is_loopback(host):
        raise ConfigError(f"--insecure-no-auth serves without authentication, so it binds only "
                          f"to loopback (127.0.0.1, ::1), not {host!r}")
    config = uvicorn.Config(app, host=host, port=port, lifespan="on" if lifespan else "off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    async with anyio.create_task_group() as group:
        group.start_soon(server._serve)  # without uvicorn's signal capture: the caller owns signals
        with anyio.fail_after(30):
            while not server.started:
                if server.should_exit:
                    raise ConfigError(f"could not serve on {host}:{port} (see the log above)")
                await anyio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        try:
            yield f"http://{shown}:{bound[1]}"
        finally:
            # Stop accepting, let responses in flight finish (uvicorn's graceful shutdown).
            server.should_exit = True

"""``tether serve``: the HTTP API, the web console and embedded workers in one process; and
``tether keys issue|revoke`` for the API keys it accepts.

Where keys come from: with ``[governance]``, its ``api_keys`` file (beside the policies that
name the principals); otherwise a file given with ``--api-keys``. With neither, ``serve``
refuses to start unless ``--insecure-no-auth`` is given: a server that silently accepted
everyone would be the one mistake nobody notices until too late.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import click

from tether.cli._common import CLIState, fail, run_async
from tether.governance import APIKeys, Governance
from tether.runtime import Runtime, load_agent
from tether.server import ServerOptions, create_app
from tether.server._serve import is_loopback, serving

_WARNING = """
!!! --insecure-no-auth: this server accepts every request WITHOUT an API key, as principal
!!! {principal!r} of tenant {tenant!r}. Use it only for a local trial; it binds to loopback only.
"""


def _keys(governance: Governance | None, path: Path | None) -> APIKeys | None:
    if path is not None:
        return APIKeys(path)
    return None if governance is None else governance.api_keys


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0 picks a free one; the URL is printed).")
@click.option("--agent", "agent_refs", multiple=True, metavar="MODULE:AGENT",
              help="An agent callers may start (repeat for more).")
@click.option("--api-keys", "keys_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="API keys file (default: [governance] api_keys).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Accept requests without a key (loopback only; for local trials).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Runs executed at once (default: max_concurrent_runs).")
@click.pass_obj
def serve_command(state: CLIState, host: str, port: int, agent_refs: tuple[str, ...],
                  keys_path: Path | None, insecure_no_auth: bool,
                  concurrency: int | None) -> None:
    """Serve the HTTP API (/v1), the console (/console) and /metrics, and execute runs."""
    governance = state.governance()
    keys = None if insecure_no_auth else _keys(governance, keys_path)
    if keys is None and not insecure_no_auth:
        fail("usage: the server needs API keys: configure [governance] in tether.toml or give "
             "--api-keys FILE (issue keys with `tether keys issue`), or pass "
             "--insecure-no-auth for a local trial")
    if insecure_no_auth and not is_loopback(host):
        fail(f"usage: --insecure-no-auth binds only to loopback (127.0.0.1 or ::1), not {host}")
    settings = state.settings()
    if concurrency is not None:
        settings = settings.replace(max_concurrent_runs=concurrency)
    if insecure_no_auth:
        click.echo(_WARNING.format(principal=settings.principal, tenant=settings.tenant),
                   err=True)

    async def main() -> None:
        agents = [load_agent(ref) for ref in agent_refs]
        async with Runtime(settings=settings, worker=True, agents=agents, models=state.models(),
                           stages=[] if governance is None else governance.stages()) as rt:
            app = create_app(rt, ServerOptions(
                api_keys=keys, governance=governance, agents=agents,
                insecure_no_auth=insecure_no_auth,
                poll_interval_seconds=min(settings.poll_interval_seconds, 0.25)))
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with serving(app, host=host, port=port,
                                   insecure_no_auth=insecure_no_auth) as url:
                    click.echo(f"tether serve on {url} (console {url}/console, store "
                               f"{rt.store.location})", err=True)
                    async for _ in signals:
                        click.echo("stopping: closing connections, then finishing calls in "
                                   "flight", err=True)
                        break
            await rt.drain(10.0)
            if governance is not None:
                await governance.audit.checkpoint_pending(rt.store)

    run_async(main)


@click.group("keys")
def keys_group() -> None:
    """Issue and revoke the API keys `tether serve` accepts."""


_KEYS_FILE = click.option("--api-keys", "keys_path",
                          type=click.Path(dir_okay=False, path_type=Path), default=None,
                          help="The keys file (default: [governance] api_keys).")


def _keys_or_fail(state: CLIState, keys_path: Path | None) -> APIKeys:
    keys = _keys(state.governance(), keys_path)
    if keys is None:
        fail("usage: give --api-keys FILE, or configure [governance] in tether.toml")
    return keys


@keys_group.command("issue")
@click.argument("principal")
@click.option("--tenant", required=True, help="The tenant the key may see.")
@_KEYS_FILE
@click.pass_obj
def keys_issue(state: CLIState, principal: str, tenant: str, keys_path: Path | None) -> None:
    """Make a key for PRINCIPAL; it is printed once and stored only hashed."""
    click.echo(_keys_or_fail(state, keys_path).issue(principal, tenant))


@keys_group.command("revoke")
@click.argument("key_id")
@_KEYS_FILE
@click.pass_obj
def keys_revoke(state: CLIState, key_id: str, keys_path: Path | None) -> None:
    """Forget a key (KEY_ID is the part after tk_)."""
    if not _keys_or_fail(state, keys_path).revoke(key_id):
        fail(f"usage: no key with id {key_id!r}")
    click.echo(f"key {key_id} revoked")

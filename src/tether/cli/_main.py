"""The ``tether`` command: thin commands that parse, call the runtime and print."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import click

from tether.cli import _remote
from tether.cli._approvals import approvals_group
from tether.cli._audit import audit_group
from tether.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CLIState,
    echo_json,
    exit_code_for,
    fail,
    parse_json,
    run_async,
)
from tether.cli._format import RECORD_HEADER, event_line, record_line, run_header, run_line
from tether.cli._identity import Identity, identity_options
from tether.cli._kill import cancel_all
from tether.cli._migrate import migrate_command
from tether.cli._policy import policy_group
from tether.cli._remote import remote_of, server_options
from tether.cli._sandbox import doctor_command, sandbox_group
from tether.cli._serve import keys_group, serve_command
from tether.config import DEFAULT_DB, SETTINGS
from tether.errors import TetherError, UsageError
from tether.runtime import RunHandle, Runtime, Subscription
from tether.store import open_store
from tether.types import Run, RunStatus

_SETTINGS_HELP = ", ".join(variable for _, variable in SETTINGS)


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=f"Settings come from tether.toml ([runtime] table) and {_SETTINGS_HELP}.")
@click.option("--db", envvar="TETHER_DB", default=None, metavar="URL",
              help=f"sqlite:///PATH, postgresql://USER@HOST:PORT/DB[?schema=NAME] or memory:// "
                   f"(default {DEFAULT_DB}).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A tether.toml (default: ./tether.toml when present).")
@click.option("--durability", type=click.Choice(["power", "process"]), default=None,
              help="power: commits survive power loss (fsync); process: a process crash.")
@click.version_option(package_name="tether", message="tether %(version)s")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config: Path | None, durability: str | None) -> None:
    """Tether: durable, governed agent runs."""
    # Agents are named MODULE:AGENT relative to where you run the command, as uvicorn does.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    ctx.obj = CLIState(config, db, durability)


async def _settle(handle: RunHandle, events: Subscription | None) -> Run:
    """Wait until the run settles, printing its (and its children's) events if asked."""
    if events is None:
        return await handle.settled()
    prefix = handle.run_id + "."

    async def printer() -> None:
        async for event in events:
            if event.run_id == handle.run_id or event.run_id.startswith(prefix):
                click.echo(event_line(event))

    async with anyio.create_task_group() as group, events:
        group.start_soon(printer)
        run = await handle.settled()
        await anyio.sleep(0.01)  # let the printer show the last events
        group.cancel_scope.cancel()
    return run


def _report(run: Run, as_json: bool) -> None:
    if as_json:
        echo_json(run.to_json())
        return
    if run.status is RunStatus.COMPLETED:
        click.echo(run.result if isinstance(run.result, str) else json.dumps(run.result))
    elif run.status is RunStatus.WAITING:
        until = f" until {run.wake_at_ms}" if run.wake_at_ms else ""
        click.echo(f"run {run.run_id} is waiting for {run.waiting_for or 'a timer'}{until}; "
                   "`tether worker` resumes it", err=True)
    else:
        error = run.error or {}
        click.echo(f"run {run.run_id} {run.status}: {error.get('code', '')}: "
                   f"{error.get('message', '')}", err=True)


@cli.command("run")
@click.argument("agent_ref", metavar="MODULE:AGENT")
@click.option("--input", "input_text", metavar="JSON", help="The agent's input, a JSON object.")
@click.option("--run-id", help="Idempotent start: the same id returns the same run.")
@click.option("--thread", "thread_id", help="Keep message history across runs on this thread.")
@click.option("--follow", is_flag=True, help="Print the run's events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@identity_options
@click.pass_obj
def run_command(state: CLIState, agent_ref: str, input_text: str | None, run_id: str | None,
                thread_id: str | None, follow: bool, as_json: bool, tenant: str | None,
                principal: str | None) -> None:
    """Run an agent here and wait until it completes, fails or parks.

    Exit status: 0 completed, 1 failed or cancelled, 3 waiting or needs_attention, 2 bad usage.
    """
    if ":" not in agent_ref:
        fail(f"usage: agent must be MODULE:AGENT (for example myapp.agents:support), "
             f"not {agent_ref!r}")

    async def main() -> Run:
        data = parse_json(input_text, "--input", object_only=True)
        async with Runtime(settings=state.settings(), worker=False, models=state.models(),
                           stages=state.stages(), telemetry=state.telemetry()) as rt:
            events = rt.events.subscribe() if follow else None
            handle = await rt.start(agent_ref, data, run_id=run_id, thread_id=thread_id,
                                    tenant=tenant, principal=principal)
            return await _settle(handle, events)

    run = run_async(main)
    _report(run, as_json)
    sys.exit(exit_code_for(run.status))


@cli.command("resume")
@click.argument("run_id")
@click.option("--follow", is_flag=True, help="Print the run's events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_obj
def resume_command(state: CLIState, run_id: str, follow: bool, as_json: bool) -> None:
    """Resume one run here (replaying its journal) and wait until it settles."""

    async def main() -> Run:
        async with Runtime(settings=state.settings(), worker=False, models=state.models(),
                           stages=state.stages(), telemetry=state.telemetry()) as rt:
            events = rt.events.subscribe() if follow else None
            return await _settle(await rt.resume(run_id), events)

    run = run_async(main)
    _report(run, as_json)
    sys.exit(exit_code_for(run.status))


@cli.command("worker")
@click.option("--once", is_flag=True, help="Exit when nothing is left to run.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Runs executed at once (default: max_concurrent_runs).")
@click.option("--follow", is_flag=True, help="Print every run's events.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="On SIGTERM/SIGINT, seconds to let tool calls in flight finish.")
@click.pass_obj
def worker_command(state: CLIState, once: bool, concurrency: int | None, follow: bool,
                   grace: float) -> None:
    """Execute runs from the database: new, resumed after a crash, woken by timers and signals."""

    async def main() -> None:
        settings = state.settings()
        if concurrency is not None:
            settings = settings.replace(max_concurrent_runs=concurrency)
        async with Runtime(settings=settings, worker=True, models=state.models(),
                           stages=state.stages(), telemetry=state.telemetry()) as rt, \
                anyio.create_task_group() as group:
            if follow:
                async def printer() -> None:
                    async with rt.events.subscribe() as events:
                        async for event in events:
                            click.echo(event_line(event))
                group.start_soon(printer)
            if once:
                await rt.until_idle()
            else:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    click.echo(f"tether worker {rt.owner} on {rt.store.location}", err=True)
                    async for _ in signals:
                        click.echo(f"stopping: finishing calls in flight (up to {grace:g} s); "
                                   "their runs resume on the next worker", err=True)
                        break
                await rt.drain(grace)
            group.cancel_scope.cancel()

    run_async(main)


@cli.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option("--data", metavar="JSON", help="The signal's data (any JSON).")
@identity_options
@server_options
@click.pass_obj
def signal_command(state: CLIState, run_id: str, name: str, data: str | None,
                   tenant: str | None, principal: str | None, server: str | None,
                   api_key_env: str) -> None:
    """Send a signal to a run (``ctx.wait(NAME)`` receives it)."""
    remote = remote_of(server, api_key_env, tenant=tenant, principal=principal)

    async def main() -> Run:
        value = parse_json(data, "--data")
        who = Identity(state, tenant, principal)
        async with Runtime(settings=state.settings(), worker=False) as rt:
            await who.load(rt.store, run_id, "signal_run")
            return await rt.signal(run_id, name, value)

    run = run_async(main) if remote is None else _remote.signal_run(remote, run_id, name, data)
    click.echo(f"signal {name!r} delivered to run {run.run_id} ({run.status})")


@cli.command("resolve")
@click.argument("run_id")
@click.option("--retry", is_flag=True,
              help="Call the uncertain effect again (same idempotency key), or retry the run.")
@click.option("--skip-with", "skip_with", metavar="JSON",
              help="Record this JSON as the uncertain effect's result, without calling it.")
@click.option("--fail", "fail_run", is_flag=True, help="Fail the run.")
@identity_options
@server_options
@click.pass_obj
def resolve_command(state: CLIState, run_id: str, retry: bool, skip_with: str | None,
                    fail_run: bool, tenant: str | None, principal: str | None,
                    server: str | None, api_key_env: str) -> None:
    """Settle a run in needs_attention (an effect whose outcome is unknown, a missing agent
    version, a non-deterministic replay)."""
    chosen = [action for action, given in
              (("retry", retry), ("skip", skip_with is not None), ("fail", fail_run)) if given]
    if len(chosen) != 1:
        fail("usage: give one of --retry, --skip-with JSON, --fail")
    action = chosen[0]
    remote = remote_of(server, api_key_env, tenant=tenant, principal=principal)

    async def main() -> Run:
        value = parse_json(skip_with, "--skip-with") if action == "skip" else None
        who = Identity(state, tenant, principal)
        async with Runtime(settings=state.settings(), worker=False) as rt:
            await who.load(rt.store, run_id, "resolve_run")
            return await rt.resolve(run_id, action, value)

    run = (run_async(main) if remote is None
           else _remote.resolve_run(remote, run_id, action, skip_with))
    click.echo(f"run {run.run_id} is now {run.status}"
               + ("; a worker will resume it" if run.status is RunStatus.PENDING else ""))


@cli.group("runs")
def runs_group() -> None:
    """List, inspect and cancel runs."""


@runs_group.command("ls")
@click.option("--status", type=click.Choice([str(s) for s in RunStatus]), default=None)
@click.option("--agent", default=None, help="Only runs of this agent.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@identity_options
@server_options
@click.pass_obj
def runs_ls(state: CLIState, status: str | None, agent: str | None, limit: int,
            as_json: bool, tenant: str | None, principal: str | None, server: str | None,
            api_key_env: str) -> None:
    """List runs, newest first.

    With [governance], only the runs the principal may read (read_run) are shown.
    """
    remote = remote_of(server, api_key_env, tenant=tenant, principal=principal)

    async def main() -> tuple[list[Run], int, str]:
        who = Identity(state, tenant, principal)
        store = open_store(state.settings())
        await store.open()
        shown: list[Run] = []
        hidden = 0
        try:
            before = None
            # Page until `limit` runs are shown: the policies may hide some of each page.
            while len(shown) < limit:
                page = await store.list_runs(status=RunStatus(status) if status else None,
                                             agent=agent, tenant=who.list_tenant,
                                             limit=limit, before=before)
                for run in page:
                    if len(shown) == limit:
                        break
                    if who.may_read(run):
                        shown.append(run)
                    else:
                        hidden += 1
                if len(page) < limit:
                    break
                before = (page[-1].created_at_ms, page[-1].run_id)
            return shown, hidden, who.principal
        finally:
            await store.aclose()

    runs, hidden, reader = (run_async(main) if remote is None else _remote.list_runs(
        remote, status=status, agent=agent, limit=limit))
    if hidden:
        click.echo(f"{hidden} run{'s' if hidden != 1 else ''} not shown: {reader} may "
                   "not read_run them", err=True)
    if as_json:
        echo_json([run.to_json() for run in runs])
        return
    if not runs:
        click.echo("no runs" + (f" with status {status}" if status else ""))
        return
    click.echo(f"{'run':34} {'status':16} {'agent':20} created")
    for run in runs:
        click.echo(run_line(run))


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@identity_options
@server_options
@click.pass_obj
def runs_show(state: CLIState, run_id: str, as_json: bool, tenant: str | None,
              principal: str | None, server: str | None, api_key_env: str) -> None:
    """Show a run: status, result or error, and every journal record."""
    remote = remote_of(server, api_key_env, tenant=tenant, principal=principal)

    async def main() -> tuple[Run, list[object]]:
        who = Identity(state, tenant, principal)
        store = open_store(state.settings())
        await store.open()
        try:
            run = await who.load(store, run_id, "read_run")
            return run, list(await store.load_journal(run_id))
        finally:
            await store.aclose()

    run, records = (run_async(main) if remote is None
                    else _remote.show_run(remote, run_id))
    if as_json:
        echo_json({"run": run.to_json(), "journal": [r.to_json() for r in records]})  # type: ignore[attr-defined]
        return
    for line in run_header(run):
        click.echo(line)
    click.echo("")
    click.echo(RECORD_HEADER)
    for record in records:
        click.echo(record_line(record))  # type: ignore[arg-type]


@runs_group.command("cancel")
@click.argument("run_id", required=False)
@click.option("--all", "everything", is_flag=True,
              help="Cancel every run that has not ended (of --tenant; of --agent).")
@click.option("--agent", default=None, help="With --all: only runs of this agent.")
@click.option("--reason", default="cancelled from the command line", show_default=True)
@identity_options
@server_options
@click.pass_obj
def runs_cancel(state: CLIState, run_id: str | None, everything: bool, agent: str | None,
                reason: str, tenant: str | None, principal: str | None, server: str | None,
                api_key_env: str) -> None:
    """Cancel a run, or with --all every live run; workers executing them stop at once."""
    if everything == (run_id is not None):
        fail("usage: give a RUN_ID, or --all (with --tenant and --agent to narrow it)")
    remote = remote_of(server, api_key_env, tenant=tenant, principal=principal)
    if everything:
        if remote is not None:
            cancelled, refused = _remote.cancel_all(remote, agent=agent, reason=reason)
        else:
            cancelled, refused_runs = run_async(lambda: cancel_all(
                state, tenant=tenant, principal=principal, agent=agent, reason=reason))
            refused = len(refused_runs)
        click.echo(f"cancelled {len(cancelled)} run(s)"
                   + (f"; the policies refused {refused}" if refused else ""))
        return
    assert run_id is not None

    async def main() -> Run:
        who = Identity(state, tenant, principal)
        async with Runtime(settings=state.settings(), worker=False) as rt:
            await who.load(rt.store, run_id, "cancel_run")
            return await rt.cancel(run_id, reason=reason, by=who.principal)

    run = run_async(main) if remote is None else _remote.cancel_run(remote, run_id, reason)
    click.echo(f"run {run.run_id} is {run.status}")


@cli.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".tether/demo"), show_default=True,
              help="Where the demo keeps its database and outbox.")
@click.option("--model", default=None, metavar="NAME",
              help="Run the agent on a model from tether.toml ([models.NAME]) or PROVIDER:MODEL "
                   "instead of the scripted one.")
@click.pass_obj
def demo_command(state: CLIState, directory: Path, model: str | None) -> None:
    """Run an agent, SIGKILL it mid-run, resume it, and show what the journal saved."""
    from tether.demo import run_demo

    try:
        code = run_demo(directory, model, state.config)
    except TetherError as exc:
        fail(f"{exc.code}: {exc.message}")
    sys.exit(code)


cli.add_command(sandbox_group)
cli.add_command(doctor_command)
cli.add_command(policy_group)
cli.add_command(approvals_group)
cli.add_command(audit_group)
cli.add_command(migrate_command)
cli.add_command(serve_command)
cli.add_command(keys_group)


def main() -> None:
    """Entry point of the ``tether`` script."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.NoSuchOption as exc:
        fail(f"usage: {exc.format_message()}")
    except click.UsageError as exc:
        fail(f"usage: {exc.format_message()}")
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UsageError as exc:
        fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
    sys.exit(EXIT_OK)

"""``tether sandbox run`` and ``tether doctor``: the sandbox from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tether.cli._common import CLIState, run_async
from tether.sandbox import Sandbox, SandboxResult, load_sandbox_config


@click.group("sandbox")
def sandbox_group() -> None:
    """Run commands in a sandbox profile."""


@sandbox_group.command("run", context_settings={"ignore_unknown_options": True,
                                                "allow_interspersed_args": False})
@click.option("--profile", default="default", show_default=True,
              help="A profile: built-in 'default' or [sandbox.profiles.NAME] in tether.toml.")
@click.option("--workspace", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Mount this directory as /workspace (default: a fresh one).")
@click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Seconds before the sandbox is killed (at most the profile's "
                                 "wall_seconds).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def sandbox_run(state: CLIState, profile: str, workspace: Path | None,
                timeout_seconds: float | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in a sandbox and exit with its status (128+N when signal N killed it,
    124 when its time ran out). Use `--` before the command."""

    async def main() -> SandboxResult:
        sandbox = Sandbox(load_sandbox_config(state.config))
        return await sandbox.run(command, profile=profile, workspace=workspace,
                                 timeout_seconds=timeout_seconds)

    result = run_async(main)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    for name, cut in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)):
        if cut:
            click.echo(f"sandbox: {name} was cut at the profile's output_bytes", err=True)
    if result.timed_out:
        click.echo(f"sandbox: killed after {result.duration_seconds:.1f} s (wall clock)",
                   err=True)
    sys.exit(result.shell_status())


@click.command("doctor")
@click.pass_obj
def doctor_command(state: CLIState) -> None:
    """Show which sandbox layers this machine offers and which profiles it can enforce
    (exit 1 when the default profile cannot run here)."""
    sandbox = Sandbox(load_sandbox_config(state.config))
    layers = sandbox.layers
    click.echo("sandbox layers on this machine:")
    for name, found in layers.describe():
        click.echo(f"  {name:12} {found}")
    click.echo("profiles:")
    default_ok = True
    for name, profile in sorted(sandbox.config.profiles.items()):
        problems = layers.problems(profile)
        network = ("no network" if profile.network == "none" else
                   "network via proxy: " + ", ".join(profile.network))
        click.echo(f"  {name:12} " + (f"enforceable ({network}; a workspace per "
                                       f"{profile.workspace})" if not problems else
                                      "NOT enforceable: " + "; ".join(problems)))
        default_ok = default_ok and (name != "default" or not problems)
    if default_ok:
        async def smoke() -> SandboxResult:
            return await sandbox.run(["/bin/sh", "-c", "exit 0"], profile="default")

        result = run_async(smoke)
        click.echo("check: a sandbox started, was verified unprivileged from the host and "
                   + ("exited cleanly" if result.exit_code == 0 else
                      f"failed ({result.shell_status()}): {result.stderr.decode()[:200]}"))
        default_ok = result.exit_code == 0
    sys.exit(0 if default_ok else 1)

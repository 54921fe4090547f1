"""``tether policy check|test``: validate the policy files, run table-driven cases."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tether.cli._common import EXIT_FAILED, CLIState, echo_json, fail
from tether.errors import PolicyInvalid, TetherError
from tether.governance import PolicyEngine, run_cases


def _engine(state: CLIState, directory: Path | None) -> PolicyEngine:
    if directory is not None:
        return PolicyEngine(directory)
    try:
        governance = state.governance()
    except TetherError as exc:
        fail(f"{exc.code}: {exc.message}")
    if governance is None:
        fail("usage: no [governance] table in tether.toml; pass --dir POLICY_DIR or add "
             "[governance] policy_dir = \"...\"")
    return governance.engine


@click.group("policy")
def policy_group() -> None:
    """Check the policy files and test them against allow/deny cases."""


_DIR = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                    default=None, help="The policy directory (default: [governance] policy_dir).")


@policy_group.command("check")
@_DIR
@click.pass_obj
def policy_check(state: CLIState, directory: Path | None) -> None:
    """Validate the *.cedar files and the entities against the (mandatory) schema.

    Exit status: 0 valid, 1 not (every problem is named), 2 bad usage.
    """
    engine = _engine(state, directory)
    try:
        bundle = engine.check()
    except PolicyInvalid as exc:
        fail(f"{exc.code}: {exc.message}", EXIT_FAILED)
    click.echo(f"ok: {len(bundle.ids)} policies ({len(bundle.approval_ids)} needing approval), "
               f"{len(bundle.principals)} principals, {len(bundle.agents)} agents in "
               f"{engine.policy_dir}; bundle {bundle.version[:16]}")


@policy_group.command("test")
@click.argument("cases", type=click.Path(dir_okay=False, path_type=Path))
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Print every decision as JSON.")
@click.pass_obj
def policy_test(state: CLIState, cases: Path, directory: Path | None, as_json: bool) -> None:
    """Decide every [[case]] of CASES (a TOML file) and compare with its `expect`.

    Exit status: 0 all as expected, 1 some not, 2 bad usage.
    """
    engine = _engine(state, directory)
    try:
        engine.check()
        results = run_cases(engine, cases)
    except TetherError as exc:
        fail(f"{exc.code}: {exc.message}", EXIT_FAILED if isinstance(exc, PolicyInvalid) else 2)
    failed = [r for r in results if not r.passed]
    if as_json:
        echo_json([{"name": r.name, "expected": r.expected, "passed": r.passed,
                    "decision": r.decision.to_json(), "reason": r.decision.reason}
                   for r in results])
    else:
        for result in results:
            mark = "pass" if result.passed else "FAIL"
            line = f"{mark}  {result.name}: {result.decision.effect}"
            if not result.passed:
                line += f" (expected {result.expected}): {result.decision.reason}"
            elif result.decision.policies:
                line += f" by {', '.join(result.decision.policies)}"
            click.echo(line)
        click.echo(f"{len(results) - len(failed)} of {len(results)} cases as expected")
    sys.exit(EXIT_FAILED if failed else 0)

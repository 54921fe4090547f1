"""What every command shares: settings from the group, error handling, JSON input, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click

from tether.config import Settings, load_settings
from tether.errors import TetherError, UsageError
from tether.governance import Governance
from tether.models import ModelConfig, load_model_configs
from tether.runtime import Stage
from tether.telemetry import Telemetry
from tether.types import JSONObject, RunStatus

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class CLIState:
    config: Path | None
    db: str | None
    durability: str | None

    def settings(self) -> Settings:
        return load_settings(self.config, db=self.db, durability=self.durability)

    def models(self) -> dict[str, ModelConfig]:
        """The ``[models.NAME]`` tables of the config file, with ``TETHER_MODELS__*``."""
        return load_model_configs(self.config)

    def governance(self) -> Governance | None:
        """Governance from the ``[governance]`` table of the config file, if it has one."""
        return Governance.from_config(self.config)

    def telemetry(self) -> Telemetry | None:
        """Spans over OTLP when the config file has a ``[telemetry]`` table."""
        return Telemetry.load(self.config)

    def stages(self) -> list[Stage]:
        """The pipeline stages the config asks for (governance), for every runtime here."""
        governance = self.governance()
        return [] if governance is None else governance.stages()


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; a Tether error becomes one line on stderr and exit 2."""
    try:
        return anyio.run(fn)
    except TetherError as exc:
        fail(f"{exc.code}: {exc.message}")
    except KeyboardInterrupt:
        fail("interrupted", 130)


def parse_json(text: str | None, what: str, *, object_only: bool = False) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg} at position {exc.pos}): "
                         f"{text[:80]!r}") from None
    if object_only and not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object like '{{\"key\": \"value\"}}'")
    return value


def exit_code_for(status: RunStatus) -> int:
    """0 completed, 1 failed or cancelled, 3 parked (waiting or needs_attention)."""
    if status is RunStatus.COMPLETED:
        return EXIT_OK
    if status in (RunStatus.WAITING, RunStatus.NEEDS_ATTENTION):
        return EXIT_PARKED
    return EXIT_FAILED


def echo_json(value: JSONObject | list[JSONObject]) -> None:
    click.echo(json.dumps(value, indent=2, default=str))

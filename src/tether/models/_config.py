"""Model configuration: the ``[models.NAME]`` tables of ``tether.toml``, their ``TETHER_MODELS__*``
environment overrides, and ``provider:model`` names.

``[runtime]`` lives in ``tether.config``; this module reads only ``[models]`` from the same file,
so each loader rejects unknown keys in its own tables and ignores the other's. The key itself is
never configured, only the *name* of the environment variable that holds it (``api_key_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tether.config import read_toml
from tether.errors import ConfigError

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[str, ...] = ("openai", "anthropic")

DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
DEFAULT_BASE_URL_ENV: dict[str, str] = {"openai": "OPENAI_BASE_URL",
                                        "anthropic": "ANTHROPIC_BASE_URL"}

ENV_PREFIX = "TETHER_MODELS__"
"""``TETHER_MODELS__<NAME>__<KEY>[__<SUBKEY>]`` overrides ``models.<name>.<key>[.<subkey>]``."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRetry(_Strict):
    """How a failed model call (429, 5xx, timeout, dropped connection) is tried again.

    The provider SDKs' own retries are switched off, so this is the only retry policy. A 429's
    ``Retry-After`` is honoured: the wait is the longer of the backoff and what the provider
    asked for; asked for more than ``max_delay``, the call fails at once instead.
    """

    max_attempts: int = Field(default=4, ge=1)
    """Attempts in all, the first included (1: never retry)."""
    initial_delay: float = Field(default=0.5, ge=0)
    """Seconds before the second attempt."""
    backoff: float = Field(default=2.0, ge=1)
    """Each further delay is the previous one times this."""
    max_delay: float = Field(default=30.0, ge=0)
    """No wait is longer than this many seconds."""
    jitter: float = Field(default=0.2, ge=0, le=1)
    """Each backoff delay is drawn from ``[delay * (1 - jitter), delay]``."""

    def delay_after(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``draw`` is in [0, 1)."""
        delay = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        return delay * (1 - self.jitter * draw)


class ModelPrices(_Strict):
    """Prices in USD per million tokens, replacing the ``genai-prices`` table for this model.

    Cached tokens cost ``input`` unless ``cache_read`` / ``cache_write`` say otherwise.
    """

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    """One model a runtime may call by name (a ``[models.NAME]`` table)."""

    provider: Provider
    """``openai`` (Chat Completions: OpenAI and every OpenAI-compatible server) or ``anthropic``."""
    model: str = Field(min_length=1)
    """The provider's id of the model, e.g. ``gpt-4o-mini``."""
    base_url: str | None = None
    """The API root (``http://127.0.0.1:8000/v1`` for a local OpenAI-compatible server). Default:
    ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` if set, else the provider's own."""
    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key (default ``OPENAI_API_KEY`` /
    ``ANTHROPIC_API_KEY``); ``""`` for a server that needs no key."""
    region: str | None = None
    """Where the model runs, for residency rules (a label; Tether does not route by it)."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds one attempt may take, the whole streamed reply included."""
    max_tokens: int | None = Field(default=None, ge=1)
    """The most tokens a reply may have (Anthropic requires one; default 4096 there)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers sent with every request (a gateway's routing header, say)."""
    retry: ModelRetry = Field(default_factory=ModelRetry)
    prices: ModelPrices | None = None

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @pydantic.field_validator("api_key_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value and not _ENV_NAME.fullmatch(value):
            # Never echo the value: someone may have pasted the key itself here.
            raise ValueError("must be the NAME of an environment variable (letters, digits and "
                             "_), not the key itself")
        return value

    def key_variable(self) -> str:
        """The environment variable the key is read from ("" when none is needed)."""
        return DEFAULT_KEY_ENV[self.provider] if self.api_key_env is None else self.api_key_env

    def resolved_base_url(self, environ: Mapping[str, str]) -> str | None:
        """``base_url``, else the provider's ``*_BASE_URL`` variable, else None (SDK default)."""
        return self.base_url or environ.get(DEFAULT_BASE_URL_ENV[self.provider]) or None


def parse_model_name(spec: str) -> ModelConfig:
    """``provider:model`` (e.g. ``openai:gpt-4o-mini``) as a configuration with defaults.

    Raises:
        ConfigError: the provider is unknown or the model id empty.
    """
    provider, sep, model = spec.partition(":")
    if not sep or provider not in PROVIDERS or not model:
        raise ConfigError(
            f"unknown model {spec!r}: name a model configured in tether.toml ([models.NAME]) "
            f"or write PROVIDER:MODEL with PROVIDER one of {', '.join(PROVIDERS)} "
            "(e.g. openai:gpt-4o-mini)")
    return ModelConfig(provider=provider, model=model)  # type: ignore[arg-type]


def load_model_configs(path: Path | None = None, *, environ: Mapping[str, str] | None = None,
                       ) -> dict[str, ModelConfig]:
    """The ``[models.NAME]`` tables of ``tether.toml`` with ``TETHER_MODELS__*`` overrides.

    Args:
        path: a ``tether.toml``; when None, ``./tether.toml`` is read if it exists.
        environ: the environment to read (``os.environ`` when None).

    Raises:
        ConfigError: naming the file or variable, the key, and what is allowed.
    """
    environ = os.environ if environ is None else environ
    if path is None and Path("tether.toml").is_file():
        path = Path("tether.toml")
    tables: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str, ...], str] = {}  # (name, key, ...) -> where the value came from
    if path is not None:
        tables = _read_file(path)
        for name, table in tables.items():
            _note_sources(sources, (name,), table, str(path))
    _apply_environment(tables, sources, environ)
    configs: dict[str, ModelConfig] = {}
    for name, table in tables.items():
        try:
            configs[name] = ModelConfig.model_validate(table)
        except pydantic.ValidationError as exc:
            raise _config_error(name, exc, sources, path) from None
    return configs


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    document = read_toml(path)
    models = document.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: models must be tables like [models.fast]")
    for name, table in models.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: models.{name} must be a table ([models.{name}]) with "
                              "provider and model")
    return models


def _note_sources(sources: dict[tuple[str, ...], str], prefix: tuple[str, ...],
                  table: Mapping[str, Any], source: str) -> None:
    for key, value in table.items():
        sources[(*prefix, key)] = source
        if isinstance(value, dict) and key != "headers":
            _note_sources(sources, (*prefix, key), value, source)


def _apply_environment(tables: dict[str, dict[str, Any]],
                       sources: dict[tuple[str, ...], str], environ: Mapping[str, str]) -> None:
    # Variable names cannot hold '-' or lower case; match them to configured names loosely.
    by_variable = {name.upper().replace("-", "_"): name for name in tables}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = variable[len(ENV_PREFIX):].split("__")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{variable}: expected {ENV_PREFIX}NAME__KEY (e.g. "
                              f"{ENV_PREFIX}FAST__BASE_URL), with __ between the parts")
        name = by_variable.get(parts[0], parts[0].lower())
        keys = [part.lower() for part in parts[1:]]
        if keys[0] == "headers" and len(keys) == 2:
            keys[1] = keys[1].replace("_", "-")  # header names use '-'; variables cannot
        node = tables.setdefault(name, {})
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{variable}: models.{name}.{'.'.join(keys[:depth + 1])} is "
                                  "not a table")
            node = child
        node[keys[-1]] = environ[variable]
        sources[(name, *keys)] = variable


def _config_error(name: str, exc: pydantic.ValidationError,
                  sources: Mapping[tuple[str, ...], str], path: Path | None) -> ConfigError:
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join(("models", name, *loc))
        source = sources.get((name, *loc)) or (str(path) if path else "configuration")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = (" (the key itself never goes in configuration: put it in an environment "
                    "variable and name that variable in api_key_env)"
                    if "key" in loc[-1] and loc[-1] != "api_key_env" else "")
            problems.append(f"{source}: unknown key {key}; allowed: {allowed}{hint}")
        elif error["type"] == "missing":
            problems.append(f"{source}: models.{name} needs {'.'.join(loc)} "
                            f"({_describe_missing(loc)})")
        else:
            value = "" if loc[-1:] == ("api_key_env",) else f", not {error['input']!r}"
            problems.append(f"{source}: {key}: {error['msg'].removeprefix('Value error, ')}"
                            f"{value}")
    return ConfigError("; ".join(problems))


def _allowed_keys(loc: tuple[str, ...]) -> str:
    model: type[BaseModel] = ModelConfig
    if loc == ("retry",):
        model = ModelRetry
    elif loc == ("prices",):
        model = ModelPrices
    return ", ".join(model.model_fields)


def _describe_missing(loc: tuple[str, ...]) -> str:
    if loc == ("provider",):
        return "one of " + ", ".join(PROVIDERS)
    if loc == ("model",):
        return "the provider's model id, e.g. gpt-4o-mini"
    return "a number of USD per million tokens"

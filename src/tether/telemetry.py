"""OpenTelemetry spans for runs, model calls and tool calls, named by the GenAI conventions.

Three spans, each a child of the one before::

    invoke_agent {agent}    one execution of a run (a resumed run is a new execution)
      chat {model}          one model call that was made (a replayed one is not)
      execute_tool {tool}   one tool call that was made

The GenAI semantic conventions are still in "Development" and have renamed attributes before
(``gen_ai.system`` became ``gen_ai.provider.name``), so the names are our own constants, pinned
to one schema version (``SCHEMA_URL``, passed with every span): a rename upstream changes
nothing here until we move the pin. Checked against the ``gen_ai`` attribute module of
opentelemetry-semantic-conventions 0.66b2.

Off unless asked for: without a ``Telemetry`` the runtime creates no span and adds no stage,
so a run costs what it cost before. With ``[telemetry] endpoint`` in ``tether.toml`` spans go
over OTLP/HTTP (``pip install 'tether[otel]'``); in tests and in an application that has its
own tracer provider, hand ``Telemetry(provider)`` to the runtime. The audit trail stores the
trace and span id of the span current when each record was written (``current_trace_ids``),
so a record leads to its trace and back.

Content (messages, arguments, results) is never put on a span: spans leave the process, and
arguments may carry what only the audit trail's keyed digests may hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from tether.config import config_file, read_toml
from tether.errors import ConfigError
from tether.types import JSONObject, Run

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic-conventions version every name below is pinned to."""

# -- attribute names (GenAI semantic conventions) -----------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_VERSION = "gen_ai.agent.version"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_DESCRIPTION = "gen_ai.tool.description"
ERROR_TYPE = "error.type"

# -- operation names ----------------------------------------------------------------------
INVOKE_AGENT = "invoke_agent"
CHAT = "chat"
EXECUTE_TOOL = "execute_tool"

# -- Tether's own attributes (not in the conventions) -------------------------------------
RUN_ID = "tether.run.id"
RUN_RESUMED = "tether.run.resumed"
RUN_STATUS = "tether.run.status"
TENANT = "tether.tenant"
PRINCIPAL = "tether.principal"
EFFECT_SEQ = "tether.effect.seq"
ATTEMPTS = "tether.attempts"
COST_USD = "tether.usage.cost_usd"

_TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, kw_only=True, slots=True)
class TelemetryConfig:
    """``[telemetry]`` in ``tether.toml``: where spans go."""

    endpoint: str
    """The OTLP/HTTP collector, ``http://HOST:4318`` (``/v1/traces`` is added unless the URL
    ends with it)."""

    service_name: str = "tether"
    """The ``service.name`` resource attribute the spans carry."""

    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers, each mapped to the NAME of the environment variable holding its value
    (a collector's token never goes in the file)."""

    timeout_seconds: float = 10.0
    """How long one export may take."""

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"telemetry.endpoint must be an http:// or https:// URL of an "
                              f"OTLP/HTTP collector, not {self.endpoint!r}")
        if self.timeout_seconds <= 0:
            raise ConfigError("telemetry.timeout_seconds must be positive")
        if not self.service_name:
            raise ConfigError("telemetry.service_name must not be empty")

    @property
    def traces_url(self) -> str:
        url = self.endpoint.rstrip("/")
        return url if url.endswith(_TRACES_PATH) else url + _TRACES_PATH

    def resolved_headers(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The headers with their values read from the environment."""
        missing = [name for name in self.headers.values() if name not in environ]
        if missing:
            raise ConfigError(f"telemetry.headers name environment variables that are not set: "
                              f"{', '.join(sorted(missing))}")
        return {header: environ[name] for header, name in self.headers.items()}


def load_telemetry_config(path: Path | None = None) -> TelemetryConfig | None:
    """The ``[telemetry]`` table of ``path`` (default ``./tether.toml`` when present), or None
    when there is no such file or table. ``TETHER_TELEMETRY_ENDPOINT`` overrides the endpoint.

    Raises:
        ConfigError: naming the file and key, and what is allowed.
    """
    path = config_file(path)
    table: Any = {} if path is None else read_toml(path).get("telemetry", {})
    where = f"{path}" if path is not None else "the environment"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [telemetry] must be a table")
    values = dict(table)
    if os.environ.get("TETHER_TELEMETRY_ENDPOINT"):
        values["endpoint"] = os.environ["TETHER_TELEMETRY_ENDPOINT"]
    if not values:
        return None
    known = {f.name for f in fields(TelemetryConfig)}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key telemetry.{key}; known keys: "
                              + ", ".join(sorted(known)))
        if key == "timeout_seconds":
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"{where}: telemetry.{key} must be a number, not {raw!r}")
        elif key == "headers":
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise ConfigError(f"{where}: telemetry.headers must be a table of header = "
                                  '"ENV_VAR_NAME"')
        elif not isinstance(raw, str):
            raise ConfigError(f"{where}: telemetry.{key} must be a string, not {raw!r}")
    if "endpoint" not in values:
        raise ConfigError(f"{where}: [telemetry] needs endpoint (the OTLP/HTTP collector, "
                          "http://HOST:4318)")
    try:
        return TelemetryConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


class Telemetry:
    """The tracer a runtime makes its spans with.

    Args:
        provider: an OpenTelemetry tracer provider (an SDK one, or your application's).
        owned: shut the provider down (exporting what is buffered) when the runtime closes;
            True for one built by ``from_config``.
    """

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("tether", schema_url=SCHEMA_URL)
        self._owned = owned

    @classmethod
    def from_config(cls, config: TelemetryConfig,
                    environ: Mapping[str, str] | None = None) -> Telemetry:
        """A provider that batches spans to the configured OTLP/HTTP collector.

        Raises:
            ConfigError: the exporter is not installed, or a header's variable is not set.
        """
        headers = config.resolved_headers(os.environ if environ is None else environ)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigError("[telemetry] needs the OpenTelemetry SDK and OTLP exporter: "
                              "pip install 'tether[otel]'") from None
        provider = SDKTracerProvider(resource=Resource.create(
            {"service.name": config.service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=config.traces_url, headers=headers, timeout=config.timeout_seconds)))
        return cls(provider, owned=True)

    @classmethod
    def load(cls, path: Path | None = None) -> Telemetry | None:
        """From ``[telemetry]`` of ``path`` (default ``./tether.toml``); None without it."""
        config = load_telemetry_config(path)
        return None if config is None else cls.from_config(config)

    def shutdown(self) -> None:
        """Export what is buffered and stop, for a provider this object built (blocking:
        call it in a thread from async code)."""
        if self._owned:
            shutdown = getattr(self.provider, "shutdown", None)
            if shutdown is not None:
                shutdown()

    @contextmanager
    def run_span(self, run: Run, *, resumed: bool) -> Iterator[Span]:
        """The ``invoke_agent`` span of one execution of a run, current while it lasts."""
        attributes: dict[str, Any] = {
            OPERATION_NAME: INVOKE_AGENT, AGENT_NAME: run.agent,
            AGENT_VERSION: run.agent_version, RUN_ID: run.run_id, RUN_RESUMED: resumed,
            TENANT: run.tenant, PRINCIPAL: run.principal}
        if run.thread_id:
            attributes[CONVERSATION_ID] = run.thread_id
        with self.tracer.start_as_current_span(
                f"{INVOKE_AGENT} {run.agent}", kind=SpanKind.INTERNAL, attributes=attributes,
                record_exception=False, set_status_on_exception=False) as span:
            yield span

    @staticmethod
    def run_settled(status: str, error: JSONObject | None) -> None:
        """Put a run's outcome on its span (the current one, where the runtime settles)."""
        span = trace.get_current_span()
        span.set_attribute(RUN_STATUS, status)
        if error is not None:
            failed(span, str(error.get("code", "agent.error")))


def failed(span: Span, code: str) -> None:
    """Mark a span failed with a Tether error code (``error.type``). The code only: an
    error's message may quote arguments, and spans leave the process."""
    span.set_attribute(ERROR_TYPE, code)
    span.set_status(Status(StatusCode.ERROR, code))


def current_trace_ids() -> dict[str, str]:
    """The trace and span id (hex) of the current span, or nothing when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x")}

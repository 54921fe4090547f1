"""``TelemetryStage``: a ``chat`` or ``execute_tool`` span around each model and tool call made.

It sits right after the journal, so a replayed effect (answered from the journal, nothing
made) has no span, and every later stage runs inside the span: a refusal by policy or by
argument validation fails the span, and the audit records written meanwhile carry its ids.
The runtime adds it only when it has a ``Telemetry``.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from tether import telemetry as otel
from tether.errors import TetherError
from tether.runtime._executors import ModelCall, ToolRequest
from tether.runtime._pipeline import Effect, Handler


def _chat(effect: Effect) -> tuple[str, SpanKind, dict[str, Any]]:
    call: ModelCall = effect.request
    model = call.model
    config = getattr(model, "config", None)
    requested = getattr(config, "model", None) or effect.name
    return f"{otel.CHAT} {requested}", SpanKind.CLIENT, {
        otel.OPERATION_NAME: otel.CHAT,
        otel.PROVIDER_NAME: getattr(model, "provider", None) or "unknown",
        otel.REQUEST_MODEL: requested}


def _tool(effect: Effect) -> tuple[str, SpanKind, dict[str, Any]]:
    request: ToolRequest = effect.request
    attributes: dict[str, Any] = {
        otel.OPERATION_NAME: otel.EXECUTE_TOOL, otel.TOOL_NAME: effect.name,
        # The id the tool itself sees as its idempotency key: stable across retries and runs.
        otel.TOOL_CALL_ID: f"{effect.scope.run.run_id}:{effect.seq}",
        otel.TOOL_TYPE: "function"}
    if request.tool.description:
        attributes[otel.TOOL_DESCRIPTION] = request.tool.description
    return f"{otel.EXECUTE_TOOL} {effect.name}", SpanKind.INTERNAL, attributes


_SPANS = {"llm": _chat, "tool": _tool}


class TelemetryStage:
    """One span per model or tool call that is made, current while the call goes on."""

    kinds: frozenset[str] | None = frozenset(_SPANS)

    def __init__(self, telemetry: otel.Telemetry) -> None:
        self._tracer = telemetry.tracer

    async def __call__(self, effect: Effect, call_next: Handler) -> Any:
        name, kind, attributes = _SPANS[effect.kind](effect)
        attributes[otel.EFFECT_SEQ] = effect.seq
        with self._tracer.start_as_current_span(
                name, kind=kind, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                value = await call_next(effect)
            except TetherError as exc:
                span.set_attribute(otel.ATTEMPTS, max(effect.attempts, 1))
                otel.failed(span, exc.code)
                raise
            ended: dict[str, Any] = {otel.ATTEMPTS: max(effect.attempts, 1)}
            usage = effect.detail.get("usage")
            if isinstance(usage, dict):
                ended[otel.USAGE_INPUT_TOKENS] = usage.get("input_tokens", 0)
                ended[otel.USAGE_OUTPUT_TOKENS] = usage.get("output_tokens", 0)
                ended[otel.USAGE_CACHE_READ_INPUT_TOKENS] = usage.get("cache_read_tokens", 0)
                ended[otel.USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.get("cache_write_tokens", 0)
                if usage.get("cost_usd") is not None:
                    ended[otel.COST_USD] = usage["cost_usd"]
            span.set_attributes(ended)  # one call: each takes the span's lock
            return value

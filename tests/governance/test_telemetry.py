"""OpenTelemetry: the spans of a governed run (names, GenAI attributes, parent and child),
captured with the SDK's in-memory exporter, the audit records that point at them, and
nothing at all when telemetry is off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gov_support import REFUNDS, calls, governance, support_agent
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tether
from conftest import fast_settings
from tether import telemetry as otel
from tether.governance import Governance
from tether.runtime._telemetry import TelemetryStage
from tether.telemetry import Telemetry
from tether.types import Reply, RunStatus

pytestmark = pytest.mark.anyio


class Captured:
    """A tracer provider whose finished spans a test can read."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = Telemetry(self.provider)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith(prefix)]


def runtime(gov: Governance | None, db_url: str, captured: Captured | None,
            ) -> tether.Runtime:
    return tether.Runtime(settings=fast_settings(db_url, principal="alice", tenant="acme"),
                          stages=[] if gov is None else gov.stages(),
                          telemetry=None if captured is None else captured.telemetry)


def ids(span: ReadableSpan) -> dict[str, str]:
    context = span.get_span_context()
    assert context is not None
    return {"trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x")}


async def test_a_run_is_an_invoke_agent_span_over_its_chat_and_execute_tool_spans(
        tmp_path: Path, db_url: str) -> None:
    captured = Captured()
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A-1"})), Reply(text="ok")])
    async with runtime(governance(tmp_path), db_url, captured) as rt:
        handle = await rt.start(agent, {"question": "?"}, thread_id="t-1")
        assert await handle.result() == "ok"
    assert [span.name for span in captured.spans()] == [
        "chat scripted", "execute_tool lookup_order", "chat scripted", "invoke_agent support"]
    (run,) = captured.named("invoke_agent")
    first_chat, tool, _ = captured.spans()[:3]
    assert run.kind is SpanKind.INTERNAL
    assert run.parent is None
    assert dict(run.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
        "gen_ai.agent.version": "1", "gen_ai.conversation.id": "t-1",
        "tether.run.id": handle.run_id, "tether.run.resumed": False, "tether.tenant": "acme",
        "tether.principal": "alice", "tether.run.status": "completed"}
    for child in captured.spans()[:3]:
        assert child.parent is not None
        assert child.parent.span_id == run.context.span_id
        assert child.context.trace_id == run.context.trace_id
    assert first_chat.kind is SpanKind.CLIENT
    assert dict(first_chat.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "unknown",
        "gen_ai.request.model": "scripted", "tether.effect.seq": 2, "tether.attempts": 1,
        "gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0}
    assert tool.kind is SpanKind.INTERNAL
    assert dict(tool.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.id": f"{handle.run_id}:3", "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Look an order up.", "tether.effect.seq": 3,
        "tether.attempts": 1}
    assert all(span.status.status_code is StatusCode.UNSET for span in captured.spans())
    for span in captured.spans():  # every name is pinned to one conventions version
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.schema_url == otel.SCHEMA_URL


async def test_audit_records_carry_the_ids_of_the_span_they_were_written_in(
        tmp_path: Path, db_url: str) -> None:
    captured = Captured()
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A-1"})), Reply(text="ok")])
    caller = captured.provider.get_tracer("app")
    async with runtime(governance(tmp_path), db_url, captured) as rt:
        with caller.start_as_current_span("request") as request:
            handle = await rt.start(agent, {"question": "?"})
        await handle.result()
        rows = await rt.store.load_audit("acme")
    records = [json.loads(row.body) for row in rows]
    by_name = {span.name: span for span in captured.spans()}
    (request_span,) = [s for s in captured.spans() if s.name == "request"]
    run_span = by_name["invoke_agent support"]
    assert run_span.parent is not None  # a run started inside a span is its child
    assert run_span.parent.span_id == request.get_span_context().span_id
    start = records[0]
    assert (start["type"], start["decision"]["action"]) == ("decision", "start_run")
    assert {k: start[k] for k in ("trace_id", "span_id")} == ids(request_span)
    tool_records = [r for r in records if r.get("kind") == "tool"]
    assert [r["type"] for r in tool_records] == ["decision", "effect"]
    for record in tool_records:
        assert {k: record[k] for k in ("trace_id", "span_id")} == ids(
            by_name["execute_tool lookup_order"])
    chats = captured.named("chat")
    llm_records = [r for r in records if r.get("kind") == "llm"]
    assert [{k: r[k] for k in ("trace_id", "span_id")} for r in llm_records] == [
        ids(chats[0]), ids(chats[0]), ids(chats[1]), ids(chats[1])]


async def test_a_refused_call_fails_its_span_with_the_error_code(
        tmp_path: Path, db_url: str) -> None:
    captured = Captured()
    agent, _ = support_agent([calls(("refund", {"order_id": "BLOCKED-1", "amount": 5})),
                              Reply(text="I may not.")])
    async with runtime(governance(tmp_path), db_url, captured) as rt:
        assert await rt.run(agent, {"question": "?"}) == "I may not."
    (tool,) = captured.named("execute_tool")
    assert tool.status.status_code is StatusCode.ERROR
    assert (tool.attributes or {})["error.type"] == "policy.denied"
    assert "BLOCKED-1" not in json.dumps(dict(tool.attributes or {}))  # no arguments leave


async def test_a_failed_run_fails_its_span(tmp_path: Path, db_url: str) -> None:
    captured = Captured()

    @tether.agent(name="support", version="boom")
    async def broken(ctx: tether.Context, question: str) -> str:
        raise ValueError("no")

    async with runtime(governance(tmp_path), db_url, captured) as rt:
        run = await (await rt.start(broken, {"question": "?"})).settled()
    assert run.status is RunStatus.FAILED
    (span,) = captured.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "agent.error"
    assert (span.attributes or {})["tether.run.status"] == "failed"


async def test_a_resumed_run_makes_spans_only_for_calls_it_makes_again(
        tmp_path: Path, db_url: str) -> None:
    REFUNDS.clear()
    captured = Captured()
    agent, _ = support_agent([calls(("refund", {"order_id": "A-9", "amount": 900})),
                              Reply(text="Done.")])
    gov = governance(tmp_path)
    async with runtime(gov, db_url, captured) as rt:
        handle = await rt.start(agent, {"question": "refund"})
        assert (await handle.settled()).status is RunStatus.WAITING
        (pending,) = await rt.store.list_approvals(status="pending")
        await gov.decide_approval(rt.store, pending.approval_id, approve=True, by="bob",
                                  reason="fine")
        await rt.resume(handle.run_id)
        assert await rt.handle(handle.run_id).result() == "Done."
    first, second = captured.named("invoke_agent")
    assert (first.attributes or {})["tether.run.resumed"] is False
    assert "tether.run.status" not in (first.attributes or {})  # it parked, not settled
    assert (second.attributes or {})["tether.run.resumed"] is True
    chats = [(s.name, s.parent.span_id if s.parent else None) for s in captured.named("chat")]
    # The first model call is replayed from the journal on resume: one span, in the first run.
    assert chats == [("chat scripted", first.context.span_id),
                     ("chat scripted", second.context.span_id)]
    tools = captured.named("execute_tool refund")
    assert [t.parent.span_id if t.parent else None for t in tools] == [
        first.context.span_id, second.context.span_id]  # held, then made after approval


async def test_without_telemetry_there_is_no_stage_no_span_and_no_id_in_the_audit(
        tmp_path: Path, db_url: str) -> None:
    agent, _ = support_agent([calls(("lookup_order", {"order_id": "A-1"})), Reply(text="ok")])
    async with runtime(governance(tmp_path), db_url, None) as rt:
        assert rt.telemetry is None
        assert not any(isinstance(getattr(h, "func", None), TelemetryStage)
                       or isinstance(getattr(getattr(h, "func", None), "__self__", None),
                                     TelemetryStage)
                       for h in rt._pipelines.values())
        assert await rt.run(agent, {"question": "?"}) == "ok"
        rows = await rt.store.load_audit("acme")
    assert rows
    assert not any("trace_id" in json.loads(row.body) for row in rows)
    assert not trace.get_current_span().get_span_context().is_valid

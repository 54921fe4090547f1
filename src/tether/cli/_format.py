"""Human-readable output: runs, journal records and live events as short lines."""

from __future__ import annotations

import datetime
import json

from tether.runtime import Event
from tether.store import Record
from tether.types import JSON, Run


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def short(value: JSON, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_line(run: Run) -> str:
    return (f"{run.run_id:34} {run.status!s:16} {run.agent:20} {when(run.created_at_ms)}")


def run_header(run: Run) -> list[str]:
    lines = [
        f"run        {run.run_id}",
        f"agent      {run.agent} (version {run.agent_version}, {run.agent_ref})",
        f"status     {run.status}",
        f"created    {when(run.created_at_ms)}   updated {when(run.updated_at_ms)}",
        f"tenant     {run.tenant}   principal {run.principal}",
        f"input      {short(run.input, 200)}",
    ]
    if run.thread_id:
        lines.append(f"thread     {run.thread_id}")
    if run.parent_run_id:
        lines.append(f"parent     {run.parent_run_id}")
    if run.waiting_for or run.wake_at_ms:
        lines.append(f"waiting    for {run.waiting_for or 'timer'}"
                     + (f" until {when(run.wake_at_ms)}" if run.wake_at_ms else ""))
    if run.status == "completed":
        lines.append(f"result     {short(run.result, 300)}")
    if run.error:
        lines.append(f"error      {run.error.get('code', '')}: {run.error.get('message', '')}")
    return lines


def record_line(record: Record) -> str:
    data = record.to_json()
    detail = data["detail"] or {}
    duration = (f"{record.finished_at_ms - record.started_at_ms} ms"
                if record.finished_at_ms is not None else "-")
    extra = ""
    usage = detail.get("usage")
    if usage:
        extra = f"tokens {usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"
    if record.state == "error":
        extra = f"{data['value'].get('message', '')}"
    elif record.kind == "llm" and data["value"]:
        reply = data["value"]
        calls = ", ".join(c["name"] for c in reply.get("tool_calls") or [])
        extra += f"  -> {'calls ' + calls if calls else short(reply.get('text') or '', 60)}"
    elif record.kind == "tool" and record.state == "ok":
        extra = short(data["value"], 60)
    if detail.get("resolution"):
        extra += f"  (resolved: {detail['resolution']})"
    return (f"{record.seq:>5}  {record.kind:11} {record.name[:24]:24} {record.state:8} "
            f"{record.attempts:>3}  {duration:>9}  {extra}")


RECORD_HEADER = f"{'seq':>5}  {'kind':11} {'name':24} {'state':8} {'try':>3}  {'duration':>9}  detail"


def event_line(event: Event) -> str:
    data = event.data
    bits = [when(event.at_ms)[11:], f"{event.type:16}"]
    if "seq" in data:
        bits.append(f"seq {data['seq']:<4}")
    if "name" in data:
        bits.append(str(data["name"]))
    if event.type == "llm.finished":
        calls = ", ".join(c["name"] for c in data.get("tool_calls") or [])
        bits.append(f"-> calls {calls}" if calls else f"-> {short(data.get('text') or '', 60)}")
    if "attempt" in data:
        bits.append(f"attempt {data['attempt']} failed: {data.get('error')}")
    if "error" in data and isinstance(data["error"], dict):
        bits.append(f"{data['error'].get('code')}: {data['error'].get('message')}")
    if "duration_ms" in data:
        bits.append(f"({data['duration_ms']} ms)")
    return "  ".join(bits)

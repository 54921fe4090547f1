"""B12: what OpenTelemetry costs per step, off and on.

The B1 workload on ``memory://`` (one run of ``--steps`` steps; each step one ``ctx.llm`` on
an instant scripted model and one async read-only tool call), three ways in each repetition,
back to back with the plain loop (the same agent loop calling model and tool directly):

* ``off``: no ``Telemetry`` (the default). The runtime adds no stage and makes no span, so
  this should be B1's ``memory/async-read`` figure.
* ``on/no-export``: an SDK tracer provider with no processor: the cost of making the spans.
* ``on/in-memory``: spans handed to an in-memory exporter as each ends (a synchronous
  processor: an upper bound for the batching exporter a deployment uses).

Reported: process CPU per step, and each case's ratio to ``off`` measured in the same run.
"""

from __future__ import annotations

import statistics
import time

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tether
from bench_agents import B1_VARIANTS, FAST_MODEL, plain_loop
from bench_common import base_parser, emit, log, paired_ratio
from tether.telemetry import Telemetry

BENCH = "b12_telemetry"
VARIANT = "async-read"
CASES = ("off", "on/no-export", "on/in-memory")


def telemetry_for(case: str) -> Telemetry | None:
    if case == "off":
        return None
    provider = TracerProvider()
    if case == "on/in-memory":
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return Telemetry(provider)


async def run_once(case: str, steps: int) -> float:
    """CPU seconds of one run of ``steps`` steps."""
    agent, _ = B1_VARIANTS[VARIANT]
    async with tether.Runtime(settings=tether.Settings(db="memory://"), worker=False,
                              telemetry=telemetry_for(case)) as rt:
        cpu = time.process_time()
        result = await rt.run(agent, {"steps": steps})
        cpu = time.process_time() - cpu
    if result != 2 + 2 * steps:
        raise RuntimeError(f"{case}: the run returned {result!r}")
    return cpu


async def plain_once(steps: int) -> float:
    _, tool = B1_VARIANTS[VARIANT]
    cpu = time.process_time()
    await plain_loop(FAST_MODEL, tool, steps)
    return time.process_time() - cpu


async def measure(steps: int, reps: int) -> tuple[list[float], dict[str, list[float]]]:
    for case in CASES:  # warm up imports, caches and the allocator
        await run_once(case, min(steps, 100))
    plain: list[float] = []
    cpu: dict[str, list[float]] = {case: [] for case in CASES}
    for rep in range(reps):
        log(f"b12: repetition {rep + 1}/{reps}")
        plain.append(await plain_once(steps))
        for case in CASES:
            cpu[case].append(await run_once(case, steps))
    return plain, cpu


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    plain, cpu = anyio.run(measure, args.steps, args.reps)
    per_step = {case: [s / args.steps * 1e6 for s in values] for case, values in cpu.items()}
    emit(BENCH, "plain-loop", "cpu_us_per_step", "us", [s / args.steps * 1e6 for s in plain],
         steps=args.steps, note="baseline: the agent loop calling model and tool directly")
    for case in CASES:
        emit(BENCH, f"memory/{VARIANT}/{case}", "cpu_us_per_step", "us", per_step[case],
             ratio=paired_ratio(cpu[case], cpu["off"]) if case != "off"
             else paired_ratio(cpu[case], plain),
             ratio_to="off" if case != "off" else "plain-loop", steps=args.steps,
             net_of_off_us=None if case == "off" else round(statistics.median(
                 (a - b) / args.steps * 1e6 for a, b in zip(cpu[case], cpu["off"],
                                                            strict=True)), 2))


if __name__ == "__main__":
    main()

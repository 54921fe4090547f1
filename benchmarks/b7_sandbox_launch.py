"""B7: launch latency of a trivial sandboxed call: a plain subprocess, a cold sandbox and a
warm-pool sandbox, measured in the same run (ratios are to the plain subprocess).

The call is ``json.dumps(obj=1)`` in the sandbox's worker, so the figure is the sandbox's own
cost (start, checks, request, answer, teardown), not a tool's import time. Warm: the pool is
refilled between calls, so each call finds a ready worker, as a runtime's pool does between
tool calls. Needs bubblewrap; as root it exercises the full recipe (own uid, cgroup).
"""

from __future__ import annotations

import statistics
import subprocess
import time

import anyio

from bench_common import base_parser, emit, log, paired_ratio
from tether.sandbox import Sandbox, sandbox_config

CALLS = 20


def plain(python: str) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-I", "-S", "-c", "print(1)"], check=True, capture_output=True)
    return time.perf_counter() - started


async def measure(reps: int) -> None:
    sandbox = Sandbox(sandbox_config({"profiles": {"warm": {"warm_workers": 1}}}))
    python = sandbox.layers.python.executable if sandbox.layers.python else "python3"
    results: dict[str, list[float]] = {"plain": [], "cold": [], "warm": []}
    async with sandbox:
        for rep in range(reps):
            log(f"b7: repetition {rep + 1}/{reps}")
            samples: dict[str, list[float]] = {name: [] for name in results}
            for _ in range(CALLS):
                samples["plain"].append(plain(python))
                started = time.perf_counter()
                outcome = await sandbox.call("json", "dumps", {"obj": 1})
                samples["cold"].append(time.perf_counter() - started)
                assert outcome.ok, outcome
                assert outcome.result == "1", outcome
                await sandbox.warm("warm")  # a ready worker, as between a runtime's calls
                started = time.perf_counter()
                outcome = await sandbox.call("json", "dumps", {"obj": 1}, profile="warm")
                samples["warm"].append(time.perf_counter() - started)
                assert outcome.ok, outcome
                assert outcome.result == "1", outcome
            for name, values in samples.items():
                results[name].append(statistics.median(values) * 1000)
    emit("b7", "plain subprocess (python -I -S)", "latency per call", "ms", results["plain"])
    emit("b7", "sandbox, cold", "latency per call", "ms", results["cold"],
         ratio=paired_ratio(results["cold"], results["plain"]), ratio_to="plain subprocess")
    emit("b7", "sandbox, warm pool", "latency per call", "ms", results["warm"], target="<= 5",
         ratio=paired_ratio(results["warm"], results["plain"]), ratio_to="plain subprocess")


def main() -> None:
    parser = base_parser(__doc__ or "")
    args = parser.parse_args()
    anyio.run(measure, args.reps)


if __name__ == "__main__":
    main()

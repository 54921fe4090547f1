"""Run the benchmarks (B1-B13; the framework comparison on request) and print one markdown
table of the results.

Each script runs in its own process; its JSON lines are collected (``--json-out`` keeps them)
and its progress goes to stderr. ``make bench`` calls this. ``--quick`` runs smaller sizes
with 2 repetitions, to check the harness rather than to measure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import BENCH_DIR, bench_env, kill_group, log, machine, stop_cleanly_on_sigterm

SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (script, extra arguments, extra arguments with --quick)
    "b1": ("b1_steps.py", [], ["--steps", "200"]),
    "b2": ("b2_concurrent.py", [], ["--runs", "1000"]),
    "b2i": ("b2_instructions.py", [], ["--runs", "100"]),
    "b3": ("b3_recovery.py", [], ["--runs", "200"]),
    "b4": ("b4_footprint.py", [], ["--runs", "200"]),
    "b5": ("b5_model_call.py", [], ["--calls", "50"]),
    "b6": ("b6_mcp_call.py", [], ["--calls", "50"]),
    "b7": ("b7_sandbox_launch.py", [], []),
    "b8": ("b8_governance.py", [], ["--calls", "500", "--steps", "200"]),
    "b9": ("b9_workers.py", [], ["--runs", "300"]),
    "b10": ("b10_server.py", [], ["--requests", "300", "--subscribers", "100"]),
    "b11": ("b11_limits.py", [], []),
    "b12": ("b12_telemetry.py", [], ["--steps", "200"]),
    "b13": ("b13_regions.py", [], ["--runs", "200"]),
    # Optional, not run by default: needs LangGraph and DBOS in .venv-bench.
    "compare": ("compare_frameworks.py", [], ["--runs", "200"]),
}
DEFAULT = ["b1", "b2", "b2i", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12", "b13"]


def run_script(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    script, extra, quick = SCRIPTS[name]
    argv = [sys.executable, str(BENCH_DIR / script), *extra]
    if args.quick:
        argv += [*quick, "--reps", "2"]
    if args.reps is not None:
        argv += ["--reps", str(args.reps)]
    if args.dir is not None:
        argv += ["--dir", str(args.dir)]
    log(f"run_all: {' '.join(argv[1:])}")
    started = time.perf_counter()
    # The child's progress (stderr) goes straight to ours. Its own session: if it overruns or
    # we are interrupted, its whole process group (workers included) is killed.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=bench_env(),
                               start_new_session=True)
    try:
        stdout, _ = process.communicate(timeout=args.timeout)
    except BaseException:
        kill_group(process)
        raise
    log(f"run_all: {name} took {time.perf_counter() - started:.0f} s")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0:
        lines.append({"benchmark": script.removesuffix(".py"), "case": "(harness)",
                      "metric": "error", "unit": "", "median": None,
                      "note": f"exited with {process.returncode}; see stderr"})
    return lines


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


_STANDARD = {"benchmark", "case", "metric", "unit", "median", "min", "max", "q1", "q3", "n",
             "meets_target", "target", "ratio", "ratio_to", "note"}


def _details(line: dict[str, Any]) -> str:
    """The fields a script added beyond the standard ones, as ``key=value``."""
    return ", ".join(f"{key}={_number(value)}" for key, value in line.items()
                     if key not in _STANDARD and key != "steps")


def markdown(lines: list[dict[str, Any]], info: dict[str, Any]) -> str:
    out = [
        f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), Linux "
        f"{info['kernel']}, Python {info['python']}.",
        "",
        "| benchmark | case | metric | median | spread (min-max) | n | target | met | "
        "ratio to baseline (same run) | details |",
        "|---|---|---|---:|---|---:|---|---|---|---|",
    ]
    for line in lines:
        median = line.get("median")
        spread = (f"{_number(line.get('min'))}-{_number(line.get('max'))}"
                  if median is not None else (line.get("note") or ""))
        met = {True: "yes", False: "**no**", None: ""}[line.get("meets_target")]
        ratio = ""
        if line.get("ratio") is not None:
            ratio = f"{_number(line['ratio'])}x {line.get('ratio_to') or ''}".strip()
        unit = line.get("unit") or ""
        out.append(
            f"| {line['benchmark']} | {line['case']} | {line['metric']} | "
            f"{_number(median)} {unit if median is not None else ''} | {spread} | "
            f"{line.get('n', 0)} | {line.get('target') or ''} | {met} | {ratio} | "
            f"{_details(line)} |")
    return "\n".join(out)


def main() -> None:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--only", type=lambda s: s.split(","), default=DEFAULT,
                        help="comma-separated subset of " + ",".join(SCRIPTS) + " (default "
                             + ",".join(DEFAULT) + "; compare needs .venv-bench, see "
                             "compare_frameworks.py)")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions for every script (default: each script's, 5)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 2 repetitions: checks the harness, measures little")
    parser.add_argument("--dir", type=Path, default=None, help="where database files go")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write every JSON line (and the machine) to this file")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds any one script may take (default 3600)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="print the table of a file written by --json-out; run nothing")
    args = parser.parse_args()
    if args.from_json is not None:
        saved = [json.loads(line) for line in args.from_json.read_text().splitlines() if line]
        info = next(line["machine"] for line in saved if "machine" in line)
        print(markdown([line for line in saved if "machine" not in line], info))
        return
    unknown = [name for name in args.only if name not in SCRIPTS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    info = machine()
    lines: list[dict[str, Any]] = []
    for name in args.only:
        lines += run_script(name, args)
    if args.json_out is not None:
        args.json_out.write_text("".join(json.dumps(line) + "\n"
                                         for line in [{"machine": info}, *lines]))
    print(markdown(lines, info))
    if any(line["metric"] == "error" for line in lines):
        sys.exit(1)


if __name__ == "__main__":
    main()

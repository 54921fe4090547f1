"""B4: footprint. (a) ``tether run bench_agents:one_step`` as a whole process (one model call
and one tool call, SQLite file, durability power): wall time and peak RSS (``/usr/bin/time
-v``). Baselines in the same repetition: ``python -c pass`` (the interpreter alone) and
``python -c "import tether.cli"`` (the imports). (b) The idle RSS of a runtime process
(``tether worker``) holding 1,000 runs parked on ``ctx.wait``, read from /proc once they are
all waiting; the baseline is the same worker with no runs.

Targets: ``tether run`` <= 300 ms; <= 60 MB, for the idle RSS with 1,000 waiting runs (and
the peak RSS of ``tether run``).
"""

from __future__ import annotations

import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

from bench_agents import create_pending, waiter
from bench_common import (
    BENCH_DIR,
    base_parser,
    bench_env,
    emit,
    kill_group,
    log,
    max_rss_mb,
    paired_ratio,
    rss_mb,
    run_child,
    sqlite_url,
    with_time,
    work_dir,
)

BENCH = "b4_footprint"
RUN_TARGET = "<= 300"
RSS_TARGET = "<= 60"


def tether_command() -> list[str]:
    """The installed ``tether`` script next to this interpreter (``python -m tether`` if none)."""
    script = Path(sys.executable).parent / "tether"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tether"]


def timed(argv: list[str], cwd: Path) -> tuple[float, float | None]:
    """Wall milliseconds and peak RSS (MB) of one process."""
    wrapped = with_time(argv)
    result = run_child(wrapped or argv, cwd=cwd, timeout=120).check(" ".join(argv))
    return result.wall_seconds * 1000, max_rss_mb(result.stderr) if wrapped else None


def run_footprint(reps: int, directory: Path) -> None:
    db = directory / "b4-run.db"
    run = [*tether_command(), "--db", sqlite_url(db), "run", "bench_agents:one_step"]
    bare = [sys.executable, "-c", "pass"]
    imports = [sys.executable, "-c", "import tether.cli"]
    # The agent module is found from the working directory, as `tether run` users do.
    timed(run, BENCH_DIR)  # creates the database, and warms the file cache
    timed(imports, BENCH_DIR)
    walls: dict[str, list[float]] = {"run": [], "bare": [], "imports": []}
    peaks: dict[str, list[float]] = {"run": [], "bare": [], "imports": []}
    for rep in range(reps):
        log(f"b4: tether run, repetition {rep + 1}/{reps}")
        for name, argv in (("bare", bare), ("imports", imports), ("run", run)):
            wall, peak = timed(argv, BENCH_DIR)
            walls[name].append(wall)
            if peak is not None:
                peaks[name].append(peak)
    emit(BENCH, "python -c pass", "wall_ms", "ms", walls["bare"], note="baseline: interpreter")
    emit(BENCH, "python -c 'import tether.cli'", "wall_ms", "ms", walls["imports"],
         ratio=paired_ratio(walls["imports"], walls["bare"]), ratio_to="python -c pass",
         note="baseline: interpreter and imports")
    emit(BENCH, "tether run one_step", "wall_ms", "ms", walls["run"], target=RUN_TARGET,
         ratio=paired_ratio(walls["run"], walls["bare"]), ratio_to="python -c pass",
         import_ratio=round(paired_ratio(walls["run"], walls["imports"]) or 0, 3),
         note="whole process: start, imports, open SQLite (power), run, close")
    emit(BENCH, "python -c pass", "peak_rss_mb", "MB", peaks["bare"] or None,
         note="baseline" if peaks["bare"] else "/usr/bin/time is unavailable")
    emit(BENCH, "tether run one_step", "peak_rss_mb", "MB", peaks["run"] or None,
         target=RSS_TARGET,
         ratio=paired_ratio(peaks["run"], peaks["bare"]) if peaks["run"] else None,
         ratio_to="python -c pass",
         note="/usr/bin/time -v" if peaks["run"] else "/usr/bin/time is unavailable")


def idle_rss(db: Path, runs: int, settle_seconds: float, timeout: float) -> float:
    """RSS (MB) of a `tether worker` once ``runs`` runs are all parked, after a pause."""
    anyio.run(create_pending, sqlite_url(db), waiter, {}, runs)
    log_path = db.parent / (db.name + ".log")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [*tether_command(), "--db", sqlite_url(db), "worker"], stdout=subprocess.DEVNULL,
            stderr=log_file, env=bench_env(), cwd=db.parent, start_new_session=True)
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            # The worker says "tether worker ... on ..." once it is up; then wait for the runs.
            while "tether worker" not in log_path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start: " + log_path.read_text())
                time.sleep(0.02)
            while conn.execute("SELECT count(*) FROM runs WHERE status = 'waiting'"
                               ).fetchone()[0] < runs:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker ended or stalled before all runs parked")
                time.sleep(0.02)
        finally:
            conn.close()
        time.sleep(settle_seconds)  # let the last parked runs be dropped from memory
        rss = rss_mb(process.pid)
        if rss is None:
            raise RuntimeError("cannot read the worker's RSS")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        kill_group(process)
    return rss


def idle_footprint(reps: int, runs: int, directory: Path) -> None:
    empty: list[float] = []
    full: list[float] = []
    for rep in range(reps):
        log(f"b4: idle worker with {runs} waiting runs, repetition {rep + 1}/{reps}")
        empty.append(idle_rss(directory / f"b4-idle0-{rep}.db", 0, 1.0, 120))
        full.append(idle_rss(directory / f"b4-idle-{rep}.db", runs, 1.0, 300))
    emit(BENCH, "worker, 0 runs", "idle_rss_mb", "MB", empty,
         note="baseline: `tether worker` with nothing to do, 1 s after start")
    per_run_kb = statistics.median((f - e) * 1e6 / 1024 / max(runs, 1)
                                   for f, e in zip(full, empty, strict=True))
    emit(BENCH, f"worker, {runs} waiting runs", "idle_rss_mb", "MB", full, target=RSS_TARGET,
         ratio=paired_ratio(full, empty), ratio_to="worker, 0 runs",
         kb_per_waiting_run=round(per_run_kb, 2),
         note="VmRSS 1 s after every run parked on ctx.wait")


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "B4")
    parser.add_argument("--runs", type=int, default=1000, help="waiting runs (default 1000)")
    parser.add_argument("--only", choices=["run", "idle"], default=None,
                        help="measure only `tether run` or only the idle worker")
    args = parser.parse_args()
    with work_dir(args.dir) as directory:
        if args.only in (None, "run"):
            run_footprint(args.reps, directory)
        if args.only in (None, "idle"):
            idle_footprint(args.reps, args.runs, directory)


if __name__ == "__main__":
    main()

"""`stop-tui sweep` vs the same sessions run one after another with `stop-tui run`, side by side
in one run: N quick-preset sessions (seeds 0..N-1) against a loopback LM server with 300 ms per
request.

  python bench/sweep.py [--runs 8] [--latency 0.3]

The server is tests/scripted_server.py (scripted replies, deterministic), a fresh one per mode.
wall = the command(s) from start to exit (the sweep's includes starting a local Ray instance);
busy = share of the wall time with at least one request in flight at the server; load = mean
requests in flight; peak = most at once. Overheads: `run` = a process's wall time minus its
session's own time (first to last event in its log: Python start, imports, opening); Ray start =
until the sweep's folder exists (ray.init on this machine); Ray per task = the task slots' time
after that (CPUs x the rest of the wall time) not spent inside a session, per task (scheduling,
worker start and imports, opening, idle slots at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from lm_helpers import cli_env, responder  # noqa: E402
from scripted_server import ScriptedLMServer  # noqa: E402

from stop_tui.engine.store import SessionStore  # noqa: E402

RUN = ["--task", "lpn", "--model", "scripted", "--preset", "quick", "--iterations", "1"]


def session_seconds(folder: Path) -> float:
    """A session's own time: its first event to its last."""
    store = SessionStore(folder, readonly=True)
    try:
        events = list(store.events())
    finally:
        store.close()
    return events[-1].t - events[0].t


def server_row(server: ScriptedLMServer, wall: float) -> dict:
    return {"wall": wall, "busy": server.busy_wall / wall, "load": server.busy_seconds / wall,
            "peak": server.max_inflight, "requests": len(server.requests)}


def one_after_another(runs: int, latency: float, folder: Path) -> tuple[dict, list[float]]:
    overheads = []
    with ScriptedLMServer(responder, latency=latency) as server:
        started = time.monotonic()
        for seed in range(runs):
            t = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "stop_tui", "run", *RUN, "--seed", str(seed),
                                   "--base-url", server.base_url, "--sessions-dir", str(folder),
                                   "--json", "--quiet"], capture_output=True, text=True, env=cli_env(), cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            own = session_seconds(Path(json.loads(proc.stdout)["session_dir"]))
            overheads.append(time.monotonic() - t - own)
        return server_row(server, time.monotonic() - started), overheads


def swept(runs: int, latency: float, folder: Path, parallel: int | None = None) -> tuple[dict, float, float]:
    """(server row, Ray start seconds, Ray overhead per task)."""
    extra = ["--max-parallel", str(parallel)] if parallel else []
    with ScriptedLMServer(responder, latency=latency) as server:
        sweep_dir = folder / "bench"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "stop_tui", "sweep", *RUN, "--seeds", f"0-{runs - 1}",
                                 "--base-url", server.base_url, "--sessions-dir", str(folder), "--name", "bench",
                                 "--json", "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=cli_env(), cwd=ROOT)
        while not (sweep_dir / "sweep.json").exists() and proc.poll() is None:
            time.sleep(0.01)
        ray_start = time.monotonic() - started
        out, err = proc.communicate()
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(err)
        row = server_row(server, wall)
    summary = json.loads(out)
    own = sum(session_seconds(Path(r["folder"])) for r in summary["runs"])
    slots = min(parallel or os.cpu_count() or 1, runs)
    return row, ray_start, (slots * (wall - ray_start) - own) / runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per request at the server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seq, run_overheads = one_after_another(args.runs, args.latency, Path(tmp) / "runs")
        par, ray_start, per_task = swept(args.runs, args.latency, Path(tmp) / "sweep")
        wide, wide_start, wide_task = swept(args.runs, args.latency, Path(tmp) / "wide", args.runs)
    print(f"{args.runs} quick-preset sessions, loopback server {args.latency * 1000:.0f} ms per request, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':42} {'wall s':>7} {'busy':>6} {'load':>6} {'peak':>5} {'requests':>9} {'speed-up':>9}")
    for label, r in (("stop-tui run, one after another", seq), ("stop-tui sweep (local Ray, a CPU each)", par),
                     (f"stop-tui sweep --max-parallel {args.runs}", wide)):
        print(f"{label:42} {r['wall']:7.2f} {r['busy']:6.0%} {r['load']:6.2f} {r['peak']:5d} {r['requests']:9d} "
              f"{seq['wall'] / r['wall']:8.2f}x")
    print(f"overhead: stop-tui run {sum(run_overheads) / len(run_overheads):.2f} s per process; sweep: Ray start "
          f"{ray_start:.2f} s, then {per_task:.2f} s per task ({wide_start:.2f} s and {wide_task:.2f} s with "
          f"--max-parallel {args.runs})")


if __name__ == "__main__":
    main()

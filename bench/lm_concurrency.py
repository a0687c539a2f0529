"""Wall time of one quick-preset STOP iteration against a loopback LM server with 300 ms latency
per request: --max-concurrency 1 vs the default, side by side with how busy the server was kept.

  python bench/lm_concurrency.py [--latency 0.3] [--repeats 2] [--paper]

The server is tests/scripted_server.py (scripted replies, deterministic). It ignores `n`, like
llama.cpp's server, so each multi-sample call becomes concurrent single requests; a row with a
server that honours `n` is printed for comparison. busy = share of the iteration's wall time
with at least one request in flight at the server; load = mean requests in flight (server
request-seconds / wall time); peak = most requests in flight at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def one_run(latency: float, honour_n: bool, concurrency: int | None, folder: Path,
            preset: str = "quick", iterations: int = 1) -> dict:
    with ScriptedLMServer(responder, honour_n=honour_n, latency=latency) as server:
        args = [sys.executable, "-m", "stop_tui", "run", "--task", "lpn", "--model", "scripted",
                "--base-url", server.base_url, "--preset", preset, "--iterations", str(iterations),
                "--sessions-dir", str(folder), "--json", "--quiet"]
        if concurrency is not None:
            args += ["--max-concurrency", str(concurrency)]
        started = time.monotonic()
        proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(), cwd=ROOT)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        summary = json.loads(proc.stdout)
        return {"wall": wall, "busy": server.busy_wall / wall, "peak": server.max_inflight,
                "load": server.busy_seconds / wall,
                "requests": len(server.requests), "reached": summary["lm"]["max_concurrency_reached"],
                "meta_utility": summary["meta_utility"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paper", action="store_true",
                        help="also time the paper preset's iteration 0 (more samples in flight)")
    args = parser.parse_args()
    rows = [("server ignores n, --max-concurrency 1", False, 1),
            ("server ignores n, default (8)", False, None),
            ("server honours n, default (8)", True, None)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, honour_n, concurrency in rows:
            runs = [one_run(args.latency, honour_n, concurrency, Path(tmp)) for _ in range(args.repeats)]
            results[label] = runs
    print(f"one quick-preset iteration, loopback server, {args.latency * 1000:.0f} ms per request, "
          f"median of {args.repeats}")
    print(f"{'':42} {'wall s':>7} {'busy':>6} {'load':>6} {'peak':>5} {'requests':>9}")
    for label, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        busy = statistics.median(r["busy"] for r in runs)
        load = statistics.median(r["load"] for r in runs)
        print(f"{label:42} {wall:7.2f} {busy:6.0%} {load:6.2f} {runs[0]['peak']:5d} "
              f"{runs[0]['requests']:9d}")
    one = statistics.median(r["wall"] for r in results[rows[0][0]])
    default = statistics.median(r["wall"] for r in results[rows[1][0]])
    print(f"speed-up of the default over --max-concurrency 1: {one / default:.2f}x")
    same = {json.dumps(r["meta_utility"]) for runs in results.values() for r in runs}
    print(f"meta-utility identical across all runs: {len(same) == 1}")
    if args.paper:
        print("\nthe paper preset's iteration 0 (5 concurrent improver runs x 6 samples), server ignores n")
        for concurrency in (1, None):
            with tempfile.TemporaryDirectory() as tmp:
                r = one_run(args.latency, False, concurrency, Path(tmp), "paper", 0)
            label = f"--max-concurrency {concurrency}" if concurrency else "default (8)"
            print(f"{label:42} {r['wall']:7.2f} {r['busy']:6.0%} {r['load']:6.2f} {r['peak']:5d} "
                  f"{r['requests']:9d}")


if __name__ == "__main__":
    main()

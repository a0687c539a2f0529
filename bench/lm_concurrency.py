"""Wall time of one quick-preset STOP iteration against a loopback LM server with 300 ms latency
per request: --max-concurrency 1 vs the default, side by side with how busy the server was kept;
the engine's overhead per iteration; and how busy `transfer` and `baseline` keep the same server
as `run` does at the paper preset.

  python bench/lm_concurrency.py [--latency 0.3] [--repeats 2] [--paper]
                                 [--transfer-tasks grid,mqa,sat,maxcut,parity]

The server is tests/scripted_server.py (scripted replies, deterministic). It ignores `n`, like
llama.cpp's server, so each multi-sample call becomes concurrent single requests; a row with a
server that honours `n` is printed for comparison. busy = share of the iteration's wall time
with at least one request in flight at the server; load = mean requests in flight (server
request-seconds / wall time); peak = most requests in flight at once.

overhead = wall / (latency x requests / peak): 1.0 would be a run that is nothing but its LM
calls, each wave of them as wide as the widest. The breakdown splits the wall time of each run
(median over the repeats) by the server's clock and the session's own event times: start-up
(the process's start to its first request at the server: interpreter, imports, session,
sandbox, the LM client), the LM (server busy), the engine between LM calls (sandboxed
improvers and evaluations, the store) and the exit (the last event to the process's end: the
summary, closing, the interpreter's shutdown). Its last line is what no engine change moves: the
`openai` package's import and the CLI's own, each timed in a fresh interpreter, both paid
before the first request (the client is built in a thread while the session and the sandbox
start, but imports hold the one GIL).

The paper rows (always printed) run `run --iterations 0` (the seed's 5 improver runs),
`transfer` (the seed improver as the improver to evaluate, on --transfer-tasks) and
`baseline --method best-of-n` on one server that honours n, one after the other, with the
default --max-concurrency (8).
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

from lm_helpers import IMPROVER, cli_env, events_of, responder  # noqa: E402
from scripted_server import ScriptedLMServer  # noqa: E402

from stop_tui.engine import events as ev  # noqa: E402


def launch(server: ScriptedLMServer, args: list[str], folder: Path) -> tuple[dict, float, float, float]:
    """`stop-tui ARGS --json --quiet` against `server`: (its JSON, wall, launch time, end time)."""
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "stop_tui", *args, "--model", "scripted", "--base-url", server.base_url,
           "--sessions-dir", str(folder), "--json", "--quiet"]
    started, clock = time.monotonic(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=ROOT)
    wall, ended = time.monotonic() - started, time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return json.loads(proc.stdout), wall, clock, ended


def one_run(latency: float, honour_n: bool, concurrency: int | None, folder: Path,
            preset: str = "quick", iterations: int = 1) -> dict:
    answered: list[float] = []  # when the server answered each choice (after its latency)

    def timed(body: dict, i: int) -> str:
        answered.append(time.time())
        return responder(body, i)

    with ScriptedLMServer(timed, honour_n=honour_n, latency=latency) as server:
        args = ["run", "--task", "lpn", "--preset", preset, "--iterations", str(iterations)]
        if concurrency is not None:
            args += ["--max-concurrency", str(concurrency)]
        summary, wall, clock, ended = launch(server, args, folder)
        events = events_of(folder, summary["session"])
        first = min(answered) - latency  # the first request reached the server
        last = events[-1].t
        # A score given again (a run's final val: engine/scores_ahead.py) records 0 s: no evaluation.
        scored = [(e.t - e.data["seconds"], e.t) for e in events
                  if e.kind == ev.SOLUTION_SCORED and e.data["seconds"] > 0]
        return {"wall": wall, "busy": server.busy_wall / wall, "peak": server.max_inflight,
                "load": server.busy_seconds / wall,
                "requests": len(server.requests), "reached": summary["lm"]["max_concurrency_reached"],
                "meta_utility": summary["meta_utility"],
                "start": first - clock, "lm": server.busy_wall,
                "between": (last - first) - server.busy_wall, "exit": ended - last,
                "evaluating": covered(scored), "evaluations": len(scored)}


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds of the union of (start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def import_seconds(module: str, runs: int = 3) -> float:
    """`import module` in a fresh interpreter (the median of `runs`)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, cwd=ROOT).stdout) for _ in range(runs)]
    return statistics.median(times)


def overhead(r: dict, latency: float) -> float:
    return r["wall"] / (latency * r["requests"] / r["peak"])


def paper_side_by_side(latency: float, tasks: str, folder: Path) -> list[tuple[str, dict]]:
    """run (iteration 0), transfer and baseline at the paper preset, each on a fresh server
    that honours n (the same server, started anew for each, so the counts are each one's)."""
    improver = folder / "improver.py"
    folder.mkdir(parents=True, exist_ok=True)
    improver.write_text(IMPROVER)
    commands = [
        ("run --iterations 0", ["run", "--task", "lpn", "--preset", "paper", "--iterations", "0"]),
        (f"transfer ({tasks})", ["transfer", "--improver", str(improver), "--tasks", tasks,
                                 "--preset", "paper"]),
        ("baseline --method best-of-n", ["baseline", "--task", "lpn", "--method", "best-of-n",
                                         "--preset", "paper"]),
    ]
    rows = []
    for i, (label, args) in enumerate(commands):
        with ScriptedLMServer(responder, honour_n=True, latency=latency) as server:
            _, wall, _, _ = launch(server, args, folder / f"p{i}")
            rows.append((label, {"wall": wall, "busy": server.busy_wall / wall,
                                 "load": server.busy_seconds / wall, "peak": server.max_inflight,
                                 "requests": len(server.requests)}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paper", action="store_true",
                        help="also time the paper preset's iteration 0 on a server that ignores n")
    parser.add_argument("--transfer-tasks", default="grid,mqa,sat,maxcut,parity",
                        help="the tasks of the paper-preset transfer row (default: transfer's own)")
    args = parser.parse_args()
    rows = [("server ignores n, --max-concurrency 1", False, 1),
            ("server ignores n, default (8)", False, None),
            ("server honours n, default (8)", True, None)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        serial = iter(range(10_000))
        for label, honour_n, concurrency in rows:
            runs = [one_run(args.latency, honour_n, concurrency, Path(tmp) / f"r{next(serial)}")
                    for _ in range(args.repeats)]
            results[label] = runs
        paper = paper_side_by_side(args.latency, args.transfer_tasks, Path(tmp) / "paper")
    print(f"one quick-preset iteration, loopback server, {args.latency * 1000:.0f} ms per request, "
          f"median of {args.repeats}")
    print(f"{'':42} {'wall s':>7} {'busy':>6} {'load':>6} {'peak':>5} {'requests':>9} {'overhead':>9}")
    for label, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "busy", "load")}
        ratio = statistics.median(overhead(r, args.latency) for r in runs)
        print(f"{label:42} {med['wall']:7.2f} {med['busy']:6.0%} {med['load']:6.2f} {runs[0]['peak']:5d} "
              f"{runs[0]['requests']:9d} {ratio:8.2f}x")
    one = statistics.median(r["wall"] for r in results[rows[0][0]])
    default = statistics.median(r["wall"] for r in results[rows[1][0]])
    print(f"speed-up of the default over --max-concurrency 1: {one / default:.2f}x")
    same = {json.dumps(r["meta_utility"]) for runs in results.values() for r in runs}
    print(f"meta-utility identical across all runs: {len(same) == 1}")

    honours = results[rows[2][0]]
    r = honours[0]
    ideal = args.latency * r["requests"] / r["peak"]
    ratios = ", ".join(f"{overhead(x, args.latency):.2f}x" for x in honours)
    print(f"\niteration overhead, server honours n: wall / ({args.latency:g} s x {r['requests']} requests "
          f"/ peak {r['peak']}) = {statistics.median(x['wall'] for x in honours):.2f} s / {ideal:.2f} s "
          f"= {statistics.median(overhead(x, args.latency) for x in honours):.2f}x (each run: {ratios})")
    parts = {k: statistics.median(x[k] for x in honours) for k in ("start", "lm", "between", "exit", "evaluating")}
    print("  where the wall time goes (median, s): "
          f"start-up to the first request at the server {parts['start']:.2f}, LM busy {parts['lm']:.2f}, "
          f"engine between LM calls {parts['between']:.2f}, exit {parts['exit']:.2f}")
    print(f"  of the engine's time: {r['evaluations']} sandboxed evaluations {parts['evaluating']:.2f} "
          f"(their time spans, overlaps counted once), the rest {parts['between'] - parts['evaluating']:.2f} "
          "(improver sandboxes, proxies, the store)")
    inner = statistics.median((x["wall"] - x["start"] - x["exit"]) / ideal for x in honours)
    print(f"  from the first request at the server to the last event (without start-up and exit): {inner:.2f}x")
    lm_import, cli_import = import_seconds("openai"), import_seconds("stop_tui.cli")
    print(f"  before any engine work, in a fresh interpreter: `import openai` {lm_import:.2f} s and "
          f"`import stop_tui.cli` {cli_import:.2f} s, both before the first request: "
          f"(ideal + both) / ideal = {(ideal + lm_import + cli_import) / ideal:.2f}x")

    print("\nthe paper preset on a server that honours n, default --max-concurrency (8)")
    print(f"{'':42} {'wall s':>7} {'busy':>6} {'load':>6} {'peak':>5} {'requests':>9}")
    for label, p in paper:
        print(f"{label:42} {p['wall']:7.2f} {p['busy']:6.0%} {p['load']:6.2f} {p['peak']:5d} {p['requests']:9d}")

    if args.paper:
        print("\nthe paper preset's iteration 0 (5 concurrent improver runs x 6 samples), server ignores n")
        for concurrency in (1, None):
            with tempfile.TemporaryDirectory() as tmp:
                r = one_run(args.latency, False, concurrency, Path(tmp) / "r", "paper", 0)
            label = f"--max-concurrency {concurrency}" if concurrency else "default (8)"
            print(f"{label:42} {r['wall']:7.2f} {r['busy']:6.0%} {r['load']:6.2f} {r['peak']:5d} "
                  f"{r['requests']:9d}")


if __name__ == "__main__":
    main()

"""Seconds per LPN utility evaluation of the seed solution (val: 20 instances), side by side:

- warm pool: what the engine does (a fresh process forked per evaluation by the confined,
  numpy-preloaded zygote; stop_tui.engine.scoring.score_solution);
- new interpreter per evaluation: the same confinement started from scratch each time
  (bubblewrap + Python + numpy), i.e. isolation without the pool;
- in-process call: the program exec'd in this process, no isolation at all (the reference
  code's way; for scale only).

The methods take turns, one evaluation each per round, so that a shared machine's load falls
on all of them alike; the ratios come from the medians of one run. Then a second pass of warm
evaluations, traced (stop_tui/engine/sandbox/trace.py), says where a warm-pool evaluation's
time goes: the run's set-up step by step (fork, namespace and mount set-up, uid drop, seccomp
load: done in advance, by a spare process the zygote keeps ready, and listed apart; what is
left of it on the wait is handing the spare its sockets), the program's load, each call's input encoding, JSON protocol and decoding, the
candidate's own function, the engine side's parsing and checks, the hang-up; what is left is
evaluate.py's own work (drawing the instances, scoring the predictions) and the evaluation's
thread. CPU seconds per evaluation count the engine and the whole sandbox (the worker and the
runs it reaped).

Run: .venv/bin/python bench/sandbox_pool.py [--evaluations N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from stop_tui.engine.sandbox import trace  # noqa: E402
from stop_tui.engine.sandbox.isolation import PoolConfig  # noqa: E402
from stop_tui.engine.sandbox.pool import Pool, default_pool  # noqa: E402
from stop_tui.engine.sandbox.process import Outcome, Sandbox  # noqa: E402
from stop_tui.engine.scoring import score_solution  # noqa: E402
from stop_tui.engine.tasks import load_task  # noqa: E402

TARGET_WARM_VS_INPROCESS = 3.0  # issue 13: at most
TARGET_FRESH_VS_WARM = 10.0  # issue 13: at least


def warm(task, source: str) -> float:
    return score_solution(task, source, "val").score


def fresh_interpreter(task, source: str, mode: str | None = None) -> float:
    pool = Pool(PoolConfig(mode=mode))
    holder: dict[str, Sandbox] = {}

    def run(*args, time_limit, rng=None):
        if "box" not in holder:
            holder["box"] = Sandbox(source, task.entry, pool=pool)
            holder["box"].start()
        return holder["box"].call(args, time_limit, rng=rng)

    try:
        result = task.evaluator.evaluate(run, "val")
    finally:
        if "box" in holder:
            holder["box"].close()
        pool.close()
    return result[0] if isinstance(result, tuple) else result


def in_process(task, source: str) -> float:
    namespace: dict = {}
    exec(compile(source, "<candidate>", "exec"), namespace)
    entry = namespace[task.entry]

    def run(*args, time_limit, rng=None):
        if rng is not None:
            random.setstate(rng[0].getstate())
            np.random.set_state(rng[1].get_state())
        started = time.perf_counter()
        try:
            value = entry(*args)
            value = value.tolist() if hasattr(value, "tolist") else value
            return Outcome(value=value, seconds=time.perf_counter() - started)
        except Exception as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started)

    result = task.evaluator.evaluate(run, "val")
    return result[0] if isinstance(result, tuple) else result


def _tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants, reaped children included (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for task_dir in Path(f"/proc/{current}/task").iterdir():
                stack += [int(k) for k in (task_dir / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / tick


def sandbox_cpu() -> float:
    pid = default_pool().worker_pid
    return _tree_cpu(pid) if pid is not None else 0.0


def measure_side_by_side(rows, n: int) -> dict[str, tuple[list[float], float]]:
    """name -> (seconds of each evaluation, last score), the rows taking turns."""
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    scores: dict[str, float] = {}
    for _ in range(n):
        for name, fn in rows:
            started = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: (times[name], scores[name]) for name, _ in rows}


def breakdown(task, source: str, n: int) -> tuple[trace.Recorder, float, float, float]:
    """Traced warm evaluations: the recorder, wall and CPU seconds per evaluation (engine,
    sandbox)."""
    wall = engine_cpu = box_cpu = 0.0
    with trace.recording() as recorder:
        for _ in range(n):
            cpu0, box0, started = time.process_time(), sandbox_cpu(), time.perf_counter()
            warm(task, source)
            wall += time.perf_counter() - started
            engine_cpu += time.process_time() - cpu0
            box_cpu += sandbox_cpu() - box0
    return recorder, wall / n, engine_cpu / n, box_cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, default=20)
    args = parser.parse_args()
    task = load_task("lpn")
    source = task.seed
    info = default_pool().describe()  # starts the warm pool (not timed)
    warm(task, source)  # first evaluation warms caches
    rows = [
        ("warm pool (engine)", lambda: warm(task, source)),
        (f"new interpreter per evaluation ({info['mode']})", lambda: fresh_interpreter(task, source)),
        ("new interpreter per evaluation (plain, no namespaces)",
         lambda: fresh_interpreter(task, source, "plain")),
        ("in-process call (no isolation)", lambda: in_process(task, source)),
    ]
    results = measure_side_by_side(rows, args.evaluations)
    medians = {name: statistics.median(times) for name, (times, _) in results.items()}
    base, inproc = medians[rows[0][0]], medians[rows[-1][0]]
    fresh = medians[rows[1][0]]
    print(f"LPN seed solution, val split (20 instances), {args.evaluations} evaluations each, "
          f"taking turns; sandbox mode {info['mode']}, missing: {', '.join(info['missing']) or 'none'}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'':<55} {'median s/eval':>14} {'mean s/eval':>12} {'vs warm pool':>13} "
          f"{'vs in-process':>14} {'score':>8}")
    for name, (times, score) in results.items():
        median = medians[name]
        print(f"{name:<55} {median:>14.4f} {statistics.mean(times):>12.4f} {median / base:>12.2f}x "
              f"{median / inproc:>13.1f}x {score:>8.4f}")
    print(f"warm pool / in-process call: {base / inproc:.2f}x (target {TARGET_WARM_VS_INPROCESS:g}x "
          f"or less); new interpreter ({info['mode']}) / warm pool: {fresh / base:.2f}x "
          f"(target {TARGET_FRESH_VS_WARM:g}x or more)")

    recorder, wall, engine_cpu, box_cpu = breakdown(task, source, args.evaluations)
    n = args.evaluations
    print(f"\nWhere a warm-pool evaluation's time goes ({n} traced evaluations; tracing adds a "
          f"little): {wall * 1e3:.2f} ms wall, CPU {engine_cpu * 1e3:.2f} ms engine + "
          f"{box_cpu * 1e3:.2f} ms sandbox per evaluation")
    print(f"{'':<84} {'ms/eval':>8} {'times/eval':>11}")
    attributed = 0
    names = sorted(recorder.total, key=lambda name: name.startswith(trace.IN_ADVANCE))
    for name in names:
        total = recorder.total[name]
        if not name.startswith(trace.IN_ADVANCE):
            attributed += total
        print(f"{name:<84} {total / n / 1e6:>8.3f} {recorder.count[name] / n:>11.0f}")
    rest = wall * 1e9 - attributed / n
    print(f"{'the rest: evaluate.py (instances, scoring), its thread, the calls between':<84} "
          f"{rest / 1e6:>8.3f}")


if __name__ == "__main__":
    main()

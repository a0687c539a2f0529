"""Seconds per LPN utility evaluation of the seed solution (val: 20 instances), side by side:

- warm pool: what the engine does (a fresh process forked per evaluation by the confined,
  numpy-preloaded zygote; stop_tui.engine.scoring.score_solution);
- new interpreter per evaluation: the same confinement started from scratch each time
  (bubblewrap + Python + numpy), i.e. isolation without the pool;
- in-process call: the program exec'd in this process, no isolation at all (the reference
  code's way; for scale only).

Run: .venv/bin/python bench/sandbox_pool.py [--evaluations N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from stop_tui.engine.sandbox.isolation import PoolConfig  # noqa: E402
from stop_tui.engine.sandbox.pool import Pool, default_pool  # noqa: E402
from stop_tui.engine.sandbox.process import Outcome, Sandbox  # noqa: E402
from stop_tui.engine.scoring import score_solution  # noqa: E402
from stop_tui.engine.tasks import load_task  # noqa: E402


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


def measure(fn, n: int) -> tuple[float, float, float]:
    times, score = [], None
    for _ in range(n):
        started = time.perf_counter()
        score = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), statistics.mean(times), score


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
    results = [(name, *measure(fn, args.evaluations)) for name, fn in rows]
    base, inproc = results[0][1], results[-1][1]
    print(f"LPN seed solution, val split (20 instances), {args.evaluations} evaluations each; "
          f"sandbox mode {info['mode']}, missing: {', '.join(info['missing']) or 'none'}")
    print(f"{'':<55} {'median s/eval':>14} {'mean s/eval':>12} {'vs warm pool':>13} "
          f"{'vs in-process':>14} {'score':>8}")
    for name, median, mean, score in results:
        print(f"{name:<55} {median:>14.4f} {mean:>12.4f} {median / base:>12.2f}x "
              f"{median / inproc:>13.1f}x {score:>8.4f}")


if __name__ == "__main__":
    main()

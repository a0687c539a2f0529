"""Executed utility of grid (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

Per instance i: seed base + i (Python's `random` and numpy's legacy RNG); length =
randint(1, 30); t = `length` draws of choice("AB"), then s likewise; the target is
grid_dist(s, t). The candidate's `algorithm(t, dist)` runs with the generators in the state
they have after those draws. Score 1 for a string at exactly the target distance, else
0.5 - |d - target| / (6 len(t)). A failing instance (an exception, a value that is not a
string over "AB" of the right length, or over 0.1 s by the sandbox's Outcome.seconds) scores 0 and
the evaluation goes on, as in the released code. Mean over 50 instances in both splits. A
program that fails to load (a syntax error, an exception in its top-level code, no
`algorithm`) scores 0, as in the released code.
"""

import random

import numpy as np

SPLITS = {"val": (4321, 50), "test": (5678, 50)}  # (base seed, instances)
TIME_LIMIT = 0.1
LOAD_FAIL_SCORE = 0.0


def grid_dist(s: str, t: str) -> int:
    d = sum(s[k] != t[k] for k in range(len(t)))
    d += sum(s[k] != s[k + 1] for k in range(len(s) - 1))
    d += sum(t[k] != t[k + 1] for k in range(len(t) - 1))
    return d


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    length = py_rng.randint(1, 30)
    t = "".join(py_rng.choice("AB") for _ in range(length))
    s = "".join(py_rng.choice("AB") for _ in range(length))
    return (t, grid_dist(s, t)), (py_rng, np_rng)


def score_answer(answer, t: str, target: int) -> tuple[float, str | None]:
    if not isinstance(answer, str):
        return 0.0, f"returned a {type(answer).__name__}, not a string"
    if len(answer) != len(t):
        return 0.0, f"returned {len(answer)} characters for a string of {len(t)}"
    if not set(answer) <= set("AB"):
        return 0.0, "returned characters other than A and B"
    d = grid_dist(answer, t)
    if d == target:
        return 1.0, None
    return 0.5 - abs(d - target) / (6 * len(t)), None


def evaluate(run, split: str):
    base, n_instances = SPLITS[split]
    scores, failures = [], []
    for i in range(n_instances):
        (t, target), rng = make_instance(base + i)
        out = run(t, target, time_limit=TIME_LIMIT, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.error is not None:
            problem, score = out.error, 0.0
        elif out.seconds > TIME_LIMIT:
            problem, score = f"took {out.seconds:.3f} s (limit {TIME_LIMIT} s)", 0.0
        else:
            score, problem = score_answer(out.value, t, target)
        if problem:
            failures.append(f"instance {i}: {problem}")
        scores.append(score)
    error = None
    if failures:
        error = f"{len(failures)} of {n_instances} instances scored 0; first: {failures[0]}"
    return sum(scores) / len(scores), error

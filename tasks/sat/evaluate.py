"""Executed utility of sat (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

Per instance i: Python's `random` seeded with base + i; n = randint(5, 50); m = 4n; planted
assignment = [False] + n draws of random() < 0.5; then up to m^2 times: a clause = sample(1..n,
3), each literal negated when random() >= 0.5, kept when the planted assignment satisfies it,
stopping at m clauses; finally shuffle(formula). The candidate runs with `random` in the state
it has after those draws (numpy's generator, left unseeded by the released code, starts from
seed base + i here so that scores are reproducible).

A satisfying answer within the time limit scores 1; a wrong answer, or one that took longer
than the limit (the run's time as the sandbox reports it, Outcome.seconds), scores 0.01. As in the
released code, an exception or an answer that cannot be checked (not a list or dict of truth
values reaching index n) ends the evaluation with 0.01, and so does a program that fails to
load (a syntax error, an exception in its top-level code, no `algorithm`). Score =
max(total / 30, 0.01).

The time limit is the task setting `time_limit` (task.toml): 10 ms by default, as the paper
says; the released code used 0.1 s. (The released code added 0, not 0.01, for an answer still
running when its wait ran out; here every late answer counts 0.01, as a wrong one does.)
"""

import random

import numpy as np

SPLITS = {"val": (4321, 30), "test": (5678, 30)}  # (base seed, instances)
DEFAULT_TIME_LIMIT = 0.01
FLOOR = 0.01
LOAD_FAIL_SCORE = FLOOR


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    n = py_rng.randint(5, 50)
    m = 4 * n
    planted = [False] + [py_rng.random() < 0.5 for _ in range(n)]
    formula = []
    for _ in range(m * m):
        clause = py_rng.sample(range(1, n + 1), 3)
        clause = [v if py_rng.random() < 0.5 else -v for v in clause]
        if any(planted[abs(lit)] == (lit > 0) for lit in clause):
            formula.append(clause)
        if len(formula) == m:
            break
    py_rng.shuffle(formula)
    return formula, n, (py_rng, np_rng)


def truth_values(value, n: int) -> tuple[dict[int, bool] | None, str | None]:
    """{variable: bool} for 1..n from a list indexed 1..n or a dict keyed by variable."""
    if isinstance(value, list):
        if len(value) < n + 1:
            return None, f"an assignment of length {len(value)} for {n} variables (index 0 unused)"
        items = {v: value[v] for v in range(1, n + 1)}
    elif isinstance(value, dict):
        items = {}
        for v in range(1, n + 1):
            if str(v) not in value:
                return None, f"no value for variable {v}"
            items[v] = value[str(v)]
    else:
        return None, f"returned a {type(value).__name__}, not an assignment"
    if not all(isinstance(x, bool | int | float) for x in items.values()):
        return None, "an assignment with values that are not truth values"
    return {v: x > 0 for v, x in items.items()}, None


def satisfies(formula, values: dict[int, bool]) -> bool:
    return all(any(values[abs(lit)] == (lit > 0) for lit in clause) for clause in formula)


def evaluate(run, split: str, settings: dict | None = None):
    settings = settings or {}
    time_limit = float(settings.get("time_limit", DEFAULT_TIME_LIMIT))
    base, n_instances = SPLITS[split]
    total, late, wrong = 0.0, 0, 0
    for i in range(n_instances):
        formula, n, rng = make_instance(base + i)
        out = run(formula, time_limit=time_limit, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.seconds > time_limit:  # a late answer (or one killed for it) is a failed formula
            total += FLOOR
            late += 1
            continue
        if out.error is not None:
            return FLOOR, f"instance {i}: {out.error}"
        values, problem = truth_values(out.value, n)
        if problem:
            return FLOOR, f"instance {i}: {problem}"
        if satisfies(formula, values):
            total += 1.0
        else:
            total += FLOOR
            wrong += 1
    error = None
    if late or wrong:
        error = f"{late} of {n_instances} formulas over {time_limit:g} s, {wrong} not satisfied"
    return max(total / n_instances, FLOOR), error

"""Executed utility of maxcut (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

Per instance i: `random.seed(base + i)` and `np.random.seed(base + i)`; nodes = randint(50,
200); for every pair i < j in order: an edge when random() < 0.4, with weight randint(1, 10).
The candidate's `algorithm(adjacency_matrix)` runs with the generators in the state they have
after those draws and returns one side label per node; two nodes are on different sides when
their labels differ.

Score: the mean over 100 instances of cut weight / total edge weight, in [0, 1]. The released
code scored the mean cut weight / 10 (not in [0, 1]: a random partition scored ~958 %) and
returned 0.01 after an exception or a timeout and 0 after a wrong-length answer; here any of
these (an exception, an answer that is not one hashable label per node, or over 0.1 s of the
run time the sandbox reports) ends the evaluation with 0.

A program that fails to load (a syntax error, an exception in its top-level code, no
`algorithm`) scores 0 as well. The released code gave a load failure the same 0.01 as an
exception while running (its rule: a program that does not load fails like one that raises);
we keep that rule on our scale, where every failure scores 0. (0.01 was 0.1 % of a random
partition's ~9.58 there; on [0, 1] it would look like a score.)
"""

import random

import numpy as np

SPLITS = {"val": (4321, 100), "test": (5678, 100)}  # (base seed, instances)
TIME_LIMIT = 0.1
P_EDGE, MAX_WEIGHT = 0.4, 10
FAIL_SCORE = 0.0  # an exception, a timeout or an unusable answer on any graph
LOAD_FAIL_SCORE = FAIL_SCORE  # as in the released code: a load failure scores like a run failure


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    n = py_rng.randint(50, 200)
    weights = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if py_rng.random() < P_EDGE:
                weights[i, j] = weights[j, i] = py_rng.randint(1, MAX_WEIGHT)
    return weights, (py_rng, np_rng)


def sides(value, n: int) -> tuple[np.ndarray | None, str | None]:
    """Side labels as small ints (equal labels, equal ints), or a reason they are unusable."""
    if not isinstance(value, list):
        return None, f"returned a {type(value).__name__}, not a list of labels"
    if len(value) != n:
        return None, f"returned {len(value)} labels for {n} nodes"
    ids: dict = {}
    try:
        return np.array([ids.setdefault(label, len(ids)) for label in value]), None
    except TypeError:
        return None, "labels must be numbers, strings or booleans"


def cut_fraction(weights: np.ndarray, side: np.ndarray) -> tuple[float, float]:
    """(cut weight, total edge weight)."""
    crossing = side[:, None] != side[None, :]
    return float(np.sum(weights * crossing) / 2), float(np.sum(weights) / 2)


def evaluate(run, split: str):
    base, n_instances = SPLITS[split]
    total = 0.0
    for i in range(n_instances):
        weights, rng = make_instance(base + i)
        out = run(weights, time_limit=TIME_LIMIT, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.error is not None:
            return FAIL_SCORE, f"instance {i}: {out.error}"
        if out.seconds > TIME_LIMIT:
            return FAIL_SCORE, f"instance {i}: took {out.seconds:.3f} s (limit {TIME_LIMIT} s)"
        side, problem = sides(out.value, len(weights))
        if problem:
            return FAIL_SCORE, f"instance {i}: {problem}"
        cut, all_edges = cut_fraction(weights, side)
        total += cut / all_edges if all_edges else 1.0
    return total / n_instances, None

"""Executed utility of mqa (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

Per instance i: numpy's legacy RNG seeded with base + i; F, D, P = three draws of
rand(15, 15) in that order. The candidate runs with numpy's generator in the state it has
after those draws; Python's `random` starts from `random.seed(base + i)` (the released code
left it unseeded, which made scores irreproducible). objective = sum_ij F[i,j] D[a_i,a_j] -
0.5 sum_i P[i,a_i] + the seconds the run took (Outcome.seconds, as the sandbox reports it).
An answer that is not a permutation of range(15), a failure or a run over 0.5 s gives that
instance an objective of 0 (the released code compared sets, so a longer list with repeats
passed; ours must be exactly a permutation). Score = max(mean objective / 225, 0.01) over 10
instances. A program that fails to load (a syntax error, an exception in its top-level code,
no `algorithm`) scores 0.01, as in the released code.

As released, the score rewards a HIGHER objective although the problem (and the seed, which
anneals) minimises it. We keep that semantics so that scores match the paper's.
"""

import random

import numpy as np

SPLITS = {"val": (4321, 10), "test": (5678, 10)}  # (base seed, instances)
N = 15
WEIGHT = 0.5  # lambda
TIME_LIMIT = 0.5
FLOOR = 0.01
LOAD_FAIL_SCORE = FLOOR


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    F = np_rng.rand(N, N)
    D = np_rng.rand(N, N)
    P = np_rng.rand(N, N)
    return (F, D, P), (py_rng, np_rng)


def permutation(value) -> tuple[list[int] | None, str | None]:
    if not isinstance(value, list):
        return None, f"returned a {type(value).__name__}, not a list"
    if len(value) != N or not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return None, f"not a permutation of range({N})"
    if sorted(value) != list(range(N)):
        return None, f"not a permutation of range({N})"
    return value, None


def objective(F, D, P, a: list[int], seconds: float) -> float:
    order = np.array(a)
    value = np.sum(F * D[np.ix_(order, order)]) - WEIGHT * np.sum(P[np.arange(N), order])
    return float(value) + seconds


def evaluate(run, split: str):
    base, n_instances = SPLITS[split]
    total, failures = 0.0, []
    for i in range(n_instances):
        (F, D, P), rng = make_instance(base + i)
        out = run(F, D, P, time_limit=TIME_LIMIT, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.error is not None:
            failures.append(f"instance {i}: {out.error}")
            continue
        if out.seconds > TIME_LIMIT:
            failures.append(f"instance {i}: took {out.seconds:.3f} s (limit {TIME_LIMIT} s)")
            continue
        a, problem = permutation(out.value)
        if problem:
            failures.append(f"instance {i}: {problem}")
            continue
        total += objective(F, D, P, a, out.seconds)
    error = None
    if failures:
        error = f"{len(failures)} of {n_instances} instances scored 0; first: {failures[0]}"
    return max(total / n_instances / (N * N), FLOOR), error

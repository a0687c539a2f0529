"""Executed utility of lpn (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

`run(*inputs, time_limit=..., rng=(py_rng, np_rng))` executes the candidate's `algorithm` in
the sandbox, whose global `random` and `np.random` start in the states these generators have
at the call (as in the reference, where the candidate ran right after the instance was drawn),
and returns an outcome with `.value` (plain JSON data), `.error` (None or a reason) and
`.seconds`. Labels never leave this side.

Instances are drawn from `random.Random(seed)` and `np.random.RandomState(seed)`: the same
streams as `random.seed(seed)` and `np.random.seed(seed)` followed by the module-level draws,
without touching the engine's global generators (the engine evaluates in several threads).

Failure scores, as in the released code: a program that fails to LOAD (a syntax error, an
exception in its top-level code, no `algorithm`: the outcome's `.load_failed`) scores 0; one
that fails while RUNNING on an instance (an exception, a timeout, unusable predictions) makes
the whole score 1e-6. The difference matters: the paper's acceptance rule replaces the
improver unless its meta-utility is 0.
"""

import random

import numpy as np

SPLITS = {"val": (4321, 20), "test": (5678, 50)}  # (base seed, instances)
TIME_LIMIT = 2.0
LOAD_FAIL_SCORE = 0.0  # the program did not load
FAIL_SCORE = 1e-6  # any exception or timeout while running fails the whole evaluation
N_BITS, N_TRAIN, N_TEST = 10, 100, 20


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    true_bits = np_rng.binomial(1, 0.3, N_BITS)
    samples = np_rng.binomial(1, 0.5, (N_TRAIN + N_TEST, N_BITS))
    parity = np.sum(samples * true_bits, axis=1) % 2
    noise = np_rng.binomial(1, 0.05, N_TRAIN)
    train_parity = (parity[:N_TRAIN] + noise) % 2
    inputs = (samples[:N_TRAIN], train_parity, samples[N_TRAIN:])
    return inputs, parity[N_TRAIN:], (py_rng, np_rng)


def evaluate(run, split: str):
    base, n_instances = SPLITS[split]
    total = 0.0
    for i in range(n_instances):
        inputs, test_parity, rng = make_instance(base + i)
        out = run(*inputs, time_limit=TIME_LIMIT, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.error is not None:
            return FAIL_SCORE, f"instance {i}: {out.error}"
        if out.seconds > TIME_LIMIT:
            return FAIL_SCORE, f"instance {i}: took {out.seconds:.2f} s (limit {TIME_LIMIT} s)"
        try:
            predictions = np.array(out.value).reshape(-1)
            correct = np.sum(predictions == test_parity.reshape(-1)) / N_TEST
            correct = float(correct)
        except Exception as exc:  # ragged, wrong length, not comparable
            return FAIL_SCORE, f"instance {i}: unusable predictions ({type(exc).__name__}: {exc})"
        total += correct / n_instances
    return total, None

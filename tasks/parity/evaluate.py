"""Executed utility of parity (trusted side; never shown to the LM), one of the STOP paper's
tasks (arXiv 2310.02304; README, "The method"), with the released code's instances.

Learning parity without noise: the lpn instance without the noise draw. Per instance i the
generators are seeded with base + i (numpy's legacy RNG and Python's `random`, as
`np.random.seed` / `random.seed` did in the reference); the candidate runs with the generators
in the state they have after the instance was drawn.

Fix over the released code: predictions are flattened before they are compared, so an (n, 1)
answer cannot broadcast into a 20 x 20 comparison (it scored 991 % there); no score exceeds 1.
As in the released code, a failing instance scores 0 and the evaluation goes on; we also give
an instance 2 s (the released code had no limit), past which it scores 0. A program that fails
to load (a syntax error, an exception in its top-level code, no `algorithm`) scores 0, as in
the released code.
"""

import random

import numpy as np

SPLITS = {"val": (4321, 20), "test": (5678, 20)}  # (base seed, instances)
TIME_LIMIT = 2.0
LOAD_FAIL_SCORE = 0.0
N_BITS, N_TRAIN, N_TEST = 10, 100, 20


def make_instance(seed: int):
    py_rng, np_rng = random.Random(seed), np.random.RandomState(seed)
    true_bits = np_rng.binomial(1, 0.3, N_BITS)
    samples = np_rng.binomial(1, 0.5, (N_TRAIN + N_TEST, N_BITS))
    parity = np.sum(samples * true_bits, axis=1) % 2
    inputs = (samples[:N_TRAIN], parity[:N_TRAIN], samples[N_TRAIN:])
    return inputs, parity[N_TRAIN:], (py_rng, np_rng)


def accuracy(value, test_parity) -> tuple[float, str | None]:
    """Fraction of correct predictions; 0 with a reason when the answer is unusable."""
    if isinstance(value, list) and len(value) > 10 * N_TEST:
        return 0.0, f"{len(value)} predictions for {N_TEST} samples"
    try:
        predictions = np.array(value).reshape(-1)
    except Exception as exc:  # ragged
        return 0.0, f"unusable predictions ({type(exc).__name__})"
    if predictions.shape != (N_TEST,):
        return 0.0, f"{predictions.size} predictions for {N_TEST} samples"
    try:
        matches = np.asarray(predictions == test_parity)
    except Exception as exc:  # incomparable values
        return 0.0, f"unusable predictions ({type(exc).__name__})"
    if matches.shape != (N_TEST,):
        return 0.0, "predictions cannot be compared with 0/1 labels"
    return float(np.sum(matches) / N_TEST), None


def evaluate(run, split: str):
    base, n_instances = SPLITS[split]
    total, failures = 0.0, []
    for i in range(n_instances):
        inputs, test_parity, rng = make_instance(base + i)
        out = run(*inputs, time_limit=TIME_LIMIT, rng=rng)
        if out.load_failed:
            return LOAD_FAIL_SCORE, f"the program failed to load: {out.error}"
        if out.error is not None:
            failures.append(f"instance {i}: {out.error}")
            continue
        if out.seconds > TIME_LIMIT:
            failures.append(f"instance {i}: took {out.seconds:.2f} s (limit {TIME_LIMIT} s)")
            continue
        correct, problem = accuracy(out.value, test_parity)
        if problem:
            failures.append(f"instance {i}: {problem}")
        total += correct
    return total / n_instances, _summary(failures, n_instances)


def _summary(failures, n_instances):
    if not failures:
        return None
    return f"{len(failures)} of {n_instances} instances scored 0; first: {failures[0]}"

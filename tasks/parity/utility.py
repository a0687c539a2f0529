import time

import numpy as np


def utility(algorithm_str: str):
    """Scores a solution to learning a parity (higher is better, at most 1).

    The solution defines algorithm(train_samples, train_parity, test_samples) and returns
    one 0/1 prediction per row of test_samples.
    """
    n_instances = 3
    n_bits, n_train, n_test = 10, 100, 20
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0

    total = 0.0
    for _ in range(n_instances):
        # The hidden parity: each of the 10 bits belongs to it with probability 0.3.
        secret = np.random.binomial(1, 0.3, n_bits)
        samples = np.random.binomial(1, 0.5, (n_train + n_test, n_bits))
        labels = (samples * secret).sum(axis=1) % 2  # no noise: every label is exact
        train_samples, train_parity = samples[:n_train], labels[:n_train]
        test_samples, test_parity = samples[n_train:], labels[n_train:]
        started = time.time()
        try:
            predictions = np.array(algorithm(train_samples, train_parity, test_samples)).reshape(-1)
            accuracy = np.sum(predictions == test_parity) / n_test
        except Exception:
            accuracy = 0
        if time.time() - started > 0.1:  # strict: 100 ms per instance
            accuracy = 0
        total += accuracy / n_instances
    return total

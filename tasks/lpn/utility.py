import time

import numpy as np


def utility(algorithm_str: str):
    """Scores a solution to learning parity with noise (higher is better, at most 1).

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
        started = time.time()
        # A hidden parity: each bit belongs to it with probability 0.3.
        secret = np.random.binomial(1, 0.3, n_bits)
        samples = np.random.binomial(1, 0.5, (n_train + n_test, n_bits))
        labels = (samples * secret).sum(axis=1) % 2
        train_samples, test_samples = samples[:n_train], samples[n_train:]
        # 5 % of the training labels are flipped; the test labels are clean.
        noise = np.random.binomial(1, 0.05, n_train)
        train_parity = (labels[:n_train] + noise) % 2
        test_parity = labels[n_train:]
        try:
            predictions = np.array(algorithm(train_samples, train_parity, test_samples)).reshape(-1)
            accuracy = np.sum(predictions == test_parity) / n_test
        except Exception:
            accuracy = 0
        if time.time() - started > 0.1:  # strict: 100 ms per instance
            return 0
        total += accuracy / n_instances
    return total

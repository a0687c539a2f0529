import time

import numpy as np


def utility(algorithm_str: str):
    """Scores a solution to a modified quadratic assignment problem (higher is better).

    The solution defines algorithm(F, D, P): F (flows), D (distances) and P (preferences) are
    15 x 15 arrays; it returns a permutation of range(15), facility i going to location a[i].
    """
    n, weight = 15, 0.5
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0.01

    total = 0.0
    n_instances = 3
    for _ in range(n_instances):
        F, D, P = np.random.rand(n, n), np.random.rand(n, n), np.random.rand(n, n)
        started = time.time()
        try:
            a = list(algorithm(F, D, P))
            seconds = time.time() - started
            if sorted(a) != list(range(n)) or seconds > 0.1:  # strict: 100 ms per instance
                continue
            objective = sum(F[i, j] * D[a[i], a[j]] for i in range(n) for j in range(n))
            objective -= weight * sum(P[i, a[i]] for i in range(n))
            total += (objective + seconds) / n_instances
        except Exception:
            continue
    return max(total / (n * n), 0.01)

import random
import time

import numpy as np


def utility(algorithm_str: str):
    """Scores a max-cut solution: the fraction of edge weight cut (higher is better, at most 1).

    The solution defines algorithm(adjacency_matrix): a symmetric n x n numpy array of edge
    weights (0 where there is no edge); it returns a list of n side labels (e.g. 0 or 1).
    If it takes more than 100 milliseconds on a graph, the score is 0.
    """
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0

    n_graphs, total = 5, 0.0
    for _ in range(n_graphs):
        n = random.randint(50, 200)
        weights = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                if random.random() < 0.4:
                    weights[i, j] = weights[j, i] = random.randint(1, 10)
        started = time.time()
        try:
            side = list(algorithm(weights))
        except Exception:
            return 0
        if time.time() - started > 0.1 or len(side) != n:
            return 0
        cut = sum(weights[i, j] for i in range(n) for j in range(i + 1, n) if side[i] != side[j])
        total += cut / (weights.sum() / 2) / n_graphs
    return total

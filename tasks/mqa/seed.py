import math
import random

import numpy as np


def algorithm(F, D, P):
    """Simulated annealing over permutations: swap two facilities, keep the swap when it lowers
    the cost or, with a probability that shrinks as the temperature cools, even when not."""
    n = len(F)
    weight = 0.5

    def cost(order):
        return float(np.sum(F * D[np.ix_(order, order)]) - weight * np.sum(P[np.arange(n), order]))

    current = list(range(n))
    current_cost = cost(current)
    best, best_cost = current[:], current_cost
    temperature = 1.0
    for _ in range(1000):
        temperature *= 0.99
        i, j = random.sample(range(n), 2)
        candidate = current[:]
        candidate[i], candidate[j] = candidate[j], candidate[i]
        candidate_cost = cost(candidate)
        delta = candidate_cost - current_cost
        if delta < 0 or random.random() < math.exp(-delta / temperature):
            current, current_cost = candidate, candidate_cost
            if current_cost < best_cost:
                best, best_cost = current[:], current_cost
    return best

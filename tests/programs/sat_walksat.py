import random


def algorithm(formula):
    """WalkSAT with restarts: flip a variable of a random unsatisfied clause, greedily or (with
    probability 0.5) at random, until every clause holds."""
    n = max(abs(lit) for clause in formula for lit in clause)
    while True:
        values = [False] + [random.random() < 0.5 for _ in range(n)]
        for _ in range(20 * n):
            unsat = [c for c in formula if not any(values[abs(l)] == (l > 0) for l in c)]
            if not unsat:
                return values
            clause = random.choice(unsat)
            if random.random() < 0.5:
                var = abs(random.choice(clause))
            else:
                def broken(v):
                    values[v] = not values[v]
                    count = sum(not any(values[abs(l)] == (l > 0) for l in c) for c in formula)
                    values[v] = not values[v]
                    return count
                var = min((abs(l) for l in clause), key=broken)
            values[var] = not values[var]

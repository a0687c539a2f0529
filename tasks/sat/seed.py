import random


def algorithm(formula):
    """A random walk: start from all-False; while some clause is unsatisfied, pick one at
    random and flip one of its variables, a random one with probability 0.4, otherwise the one
    whose flip leaves the fewest of its clauses satisfied... as the classic walk does."""
    n = max(abs(literal) for clause in formula for literal in clause)
    values = [False] * (n + 1)

    def satisfied(clause):
        return any(values[abs(literal)] == (literal > 0) for literal in clause)

    for _ in range(1000):
        unsatisfied = [clause for clause in formula if not satisfied(clause)]
        if not unsatisfied:
            return values
        clause = random.choice(unsatisfied)
        if random.random() < 0.4:
            literal = random.choice(clause)
        else:
            literal = min(clause, key=lambda lit: sum(satisfied(c) for c in formula if lit in c))
        values[abs(literal)] = not values[abs(literal)]
    return None

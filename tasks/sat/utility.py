import random
import time


def make_formula(n: int, m: int):
    """A random 3-SAT formula with n variables and m clauses, satisfiable by construction."""
    planted = [False] + [random.random() < 0.5 for _ in range(n)]
    formula = []
    while len(formula) < m:
        clause = [v if random.random() < 0.5 else -v for v in random.sample(range(1, n + 1), 3)]
        if any(planted[abs(lit)] == (lit > 0) for lit in clause):
            formula.append(clause)
    return formula


def utility(algorithm_str: str):
    """Scores a 3-SAT solver: the fraction of formulas it satisfies in time (at most 1).

    The solution defines algorithm(formula): formula is a list of clauses, each a list of 3
    non-zero ints (v means variable v is true, -v that it is false); it returns a list
    `assignment` of booleans where assignment[v] is the value of variable v (index 0 unused).
    It must be extremely fast: a formula that takes more than 10 milliseconds is a failure.
    """
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0

    n_formulas, solved = 20, 0
    for _ in range(n_formulas):
        n = random.randint(5, 50)
        formula = make_formula(n, 4 * n)
        started = time.time()
        try:
            assignment = algorithm([clause[:] for clause in formula])
        except Exception:
            return 0
        if time.time() - started > 0.01:
            continue
        if all(any(bool(assignment[abs(lit)]) == (lit > 0) for lit in clause) for clause in formula):
            solved += 1
    return solved / n_formulas

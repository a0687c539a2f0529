import random
import time


def grid_dist(s: str, t: str) -> int:
    """Positions where s and t differ + adjacent unequal pairs in s + the same in t."""
    assert isinstance(s, str) and isinstance(t, str) and len(s) == len(t) and set(s + t) <= set("AB")
    d = sum(s[k] != t[k] for k in range(len(t)))
    d += sum(s[k] != s[k + 1] for k in range(len(s) - 1))
    d += sum(t[k] != t[k + 1] for k in range(len(t) - 1))
    return d


def utility(algorithm_str: str):
    """Scores a solution to the string grid distance task (higher is better, at most 1).

    The solution defines algorithm(t, dist): given a string t over "AB" and a distance, it
    returns a string s over "AB" with len(s) == len(t) and grid_dist(s, t) == dist.
    """
    try:
        namespace = {}
        exec(algorithm_str, namespace)
        algorithm = namespace["algorithm"]
    except Exception:
        return 0

    scores = []
    for _ in range(10):
        length = random.randint(1, 30)
        t = "".join(random.choice("AB") for _ in range(length))
        s = "".join(random.choice("AB") for _ in range(length))
        target = grid_dist(s, t)  # always reachable: s is at that distance
        started = time.time()
        try:
            d = grid_dist(algorithm(t, target), t)
        except Exception:
            scores.append(0)
            continue
        if time.time() - started > 0.1:  # strict: 100 ms per instance
            scores.append(0)
        elif d == target:
            scores.append(1)
        else:
            scores.append(0.5 - abs(d - target) / (6 * len(t)))
    return sum(scores) / len(scores)

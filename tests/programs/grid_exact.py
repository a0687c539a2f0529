def algorithm(t, dist):
    """Dynamic programming over positions: which values of
    (positions differing from t) + (adjacent unequal pairs of s) are reachable, per last char;
    then walk back to build one string at exactly the target."""
    n = len(t)
    target = dist - sum(t[k] != t[k + 1] for k in range(n - 1))
    # reach[i][c] = set of values reachable for s[:i+1] ending with c
    reach = [{c: set() for c in "AB"} for _ in range(n)]
    for c in "AB":
        reach[0][c].add(int(c != t[0]))
    for i in range(1, n):
        for c in "AB":
            for p in "AB":
                for v in reach[i - 1][p]:
                    reach[i][c].add(v + int(c != t[i]) + int(c != p))
    end = next((c for c in "AB" if target in reach[n - 1][c]), None)
    if end is None:
        return t
    s, value = [end], target
    for i in range(n - 1, 0, -1):
        c = s[-1]
        value -= int(c != t[i])
        p = next(p for p in "AB" if value - int(c != p) in reach[i - 1][p])
        value -= int(c != p)
        s.append(p)
    return "".join(reversed(s))

def algorithm(F, D, P):
    return list(range(len(F)))

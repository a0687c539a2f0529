import numpy as np


def algorithm(adjacency_matrix):
    """Random sides, then move single nodes while a move raises the cut (a few sweeps)."""
    w = np.asarray(adjacency_matrix)
    n = len(w)
    side = np.random.randint(0, 2, n)
    for _ in range(10):
        sign = np.where(side == 1, 1.0, -1.0)
        # gain of moving node i: weight to its own side minus weight to the other side
        same = w @ (sign > 0) * (sign > 0) + w @ (sign < 0) * (sign < 0)
        other = w.sum(axis=1) - same
        gain = same - other
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            break
        side[i] = 1 - side[i]
    return side.tolist()

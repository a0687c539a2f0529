def algorithm(adjacency_matrix):
    """Greedy: place one node at a time, always the (node, side) pair that adds the most weight
    to the cut given the nodes already placed."""
    n = len(adjacency_matrix)
    side = [None] * n
    unplaced = set(range(n))
    while unplaced:
        best = None
        for node in unplaced:
            weights = adjacency_matrix[node]
            to_side = [0.0, 0.0]
            for other in range(n):
                if side[other] is not None:
                    to_side[side[other]] += weights[other]
            for s in (0, 1):
                gain = to_side[1 - s]  # edges to the other side are cut
                if best is None or gain > best[0]:
                    best = (gain, node, s)
        _, node, s = best
        side[node] = s
        unplaced.remove(node)
    return side

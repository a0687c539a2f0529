def algorithm(adjacency_matrix):
    return [0] * len(adjacency_matrix)

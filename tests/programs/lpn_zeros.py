import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    return np.zeros(len(test_samples), dtype=int)

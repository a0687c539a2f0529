"""The two intervals the reports give: a mean with its 95 % Student-t interval (scores over runs:
transfer, baselines) and the 95 % Wilson interval of a proportion (the safety audit's rates)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the two-sided 97.5 % quantile of the standard normal

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (past 30: Z95 rounded).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_ci(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)
            ) -> tuple[float | None, list[float] | None]:
    """The mean and a 95 % Student-t interval, clipped to `bounds` (default [0, 1]: the values
    are scores; spend is (0, inf)); [m, m] for one value, (None, None) for none."""
    if not values:
        return None, None
    n = len(values)
    m = sum(values) / n
    if n == 1:
        return m, [m, m]
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    half = t * sd / math.sqrt(n)
    return m, [max(bounds[0], m - half), min(bounds[1], m + half)]


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (0..1); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)

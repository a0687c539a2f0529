"""engine/stats.py against values worked out by hand (the arithmetic is in each comment)."""

from __future__ import annotations

import pytest

from stop_tui.engine.stats import mean_ci, wilson


def test_mean_ci_of_nothing_and_of_one_value():
    assert mean_ci([]) == (None, None)
    assert mean_ci([0.5]) == (0.5, [0.5, 0.5])


def test_mean_ci_uses_student_t():
    # mean 0.5; squared deviations 0.09 + 0.01 + 0.01 + 0.09 = 0.2, s = sqrt(0.2 / 3) = 0.258199;
    # t(3) = 3.182: half-width 3.182 * 0.258199 / sqrt(4) = 0.410795
    m, (lo, hi) = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert m == pytest.approx(0.5)
    assert (lo, hi) == (pytest.approx(0.089205, abs=1e-6), pytest.approx(0.910795, abs=1e-6))
    # mean 0.6, s = 0.1, t(2) = 4.303: half-width 4.303 * 0.1 / sqrt(3) = 0.248434
    m, (lo, hi) = mean_ci([0.5, 0.6, 0.7])
    assert (lo, hi) == (pytest.approx(0.351566, abs=1e-6), pytest.approx(0.848434, abs=1e-6))


def test_mean_ci_is_clipped_to_scores():
    # mean 0.95, s = 0.070711, t(1) = 12.706: half-width 12.706 * 0.070711 / sqrt(2) = 0.6353
    m, (lo, hi) = mean_ci([0.9, 1.0])
    assert m == pytest.approx(0.95) and lo == pytest.approx(0.3147, abs=1e-4) and hi == 1.0
    m, (lo, hi) = mean_ci([0.4, 0.6])  # half-width 12.706 * 0.141421 / sqrt(2) = 1.2706
    assert (lo, hi) == (0.0, 1.0)


def test_mean_ci_past_thirty_degrees_of_freedom_uses_the_normal_quantile():
    # 31 values (30 degrees of freedom): the table's last entry, t(30) = 2.042. Fifteen 0s,
    # fifteen 1s and one 0.5: mean 0.5, s = sqrt(30 * 0.25 / 30) = 0.5; half 2.042 * 0.5 / sqrt(31)
    values = [0.0] * 15 + [1.0] * 15 + [0.5]
    m, (lo, hi) = mean_ci(values)
    assert m == pytest.approx(0.5) and hi - m == pytest.approx(0.183377, abs=1e-5)
    # 32 values (31 degrees of freedom): 1.96. Sixteen 0s and sixteen 1s: mean 0.5,
    # s = sqrt(32 * 0.25 / 31) = 0.508001; half-width 1.96 * 0.508001 / sqrt(32) = 0.176013
    m, (lo, hi) = mean_ci([0.0] * 16 + [1.0] * 16)
    assert (lo, hi) == (pytest.approx(0.323987, abs=1e-5), pytest.approx(0.676013, abs=1e-5))


def test_wilson_interval():
    assert wilson(0, 0) == (0.0, 1.0)
    # 5 of 10, z = 1.959964: z^2 = 3.841459, denominator 1 + z^2/10 = 1.384146; centre 0.5;
    # half-width 1.959964 * sqrt(0.025 + z^2/400) / 1.384146 = 0.263407
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-5), pytest.approx(0.763407, abs=1e-5))
    # 0 of 10: centre (z^2/20) / 1.384146 = 0.138767 = half-width: [0, 0.277535]
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.277535, abs=1e-5)
    lo, hi = wilson(10, 10)  # the mirror image
    assert lo == pytest.approx(0.722465, abs=1e-5) and hi == pytest.approx(1.0, abs=1e-12)

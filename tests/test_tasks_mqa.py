"""mqa: the executed utility against hand-derived expectations (the instances as the released
code draws them, the seed's score as the paper reports it; README, "The method")."""

from __future__ import annotations

import numpy as np
import pytest
from task_helpers import fixed

from stop_tui.engine.sandbox.process import Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

TASK = load_task("mqa")
EV = TASK.evaluator
N = 15


def paper_objective(base: int, assignment_of, seconds: float) -> float:
    """As the released code draws them: per instance np.random.seed; F, D, P in that order;
    objective summed by hand."""
    total = 0.0
    for i in range(10):
        np.random.seed(base + i)
        F, D, P = np.random.rand(N, N), np.random.rand(N, N), np.random.rand(N, N)
        a = assignment_of(F, D, P)
        value = sum(F[r, c] * D[a[r], a[c]] for r in range(N) for c in range(N))
        value -= 0.5 * sum(P[r, a[r]] for r in range(N))
        total += (value + seconds) / 10
    return max(total / (N * N), 0.01)


@pytest.mark.parametrize("split,base", [("val", 4321), ("test", 5678)])
def test_identity_permutation_scores_as_derived(split, base):
    run = fixed([Outcome(value=list(range(N)), seconds=0.002)])
    score, error = EV.evaluate(run, split)
    assert error is None
    assert score == pytest.approx(paper_objective(base, lambda F, D, P: list(range(N)), 0.002), abs=1e-12)


@pytest.mark.parametrize("value", [[0] * N, list(range(N - 1)), list(range(N + 1)), [float(i) for i in range(N)],
                                   None, "0123", [True] + list(range(1, N))])
def test_not_a_permutation_scores_0(value):
    score, error = EV.evaluate(fixed([Outcome(value=value, seconds=0.001)]), "val")
    assert score == 0.01  # every instance 0: the floor
    assert "permutation" in error or "not a list" in error


def test_over_half_a_second_scores_0():
    score, error = EV.evaluate(fixed([Outcome(value=list(range(N)), seconds=0.51)]), "val")
    assert score == 0.01 and "limit 0.5 s" in error


def test_seed_anneals_toward_a_lower_objective_and_scores_about_the_papers_20_4():
    seed = score_solution(TASK, TASK.seed, "test")
    identity = score_solution(TASK, "def algorithm(F, D, P):\n    return list(range(len(F)))\n", "test")
    assert seed.error is None
    # Higher is better as released, while the seed minimises: it scores below the identity.
    assert seed.score < identity.score
    assert seed.score == pytest.approx(0.204, abs=0.005)  # the paper's seed score: 20.4 %

"""parity: the executed utility against hand-derived expectations (the instances as the released
code draws them; README, "The method")."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PROGRAMS
from task_helpers import fixed, in_process

from stop_tui.engine.sandbox.process import Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

TASK = load_task("parity")
EV = TASK.evaluator


def paper_labels(base: int):
    """Test labels as the released code draws them: lpn's instance without the noise draw, 20
    instances."""
    labels = []
    for i in range(20):
        np.random.seed(base + i)
        true_bits = np.random.binomial(1, 0.3, 10)
        samples = np.random.binomial(1, 0.5, (120, 10))
        labels.append((samples * true_bits).sum(axis=1) % 2)
    return [y[100:] for y in labels]


@pytest.mark.parametrize("split,base", [("val", 4321), ("test", 5678)])
def test_all_zeros_scores_the_share_of_zero_labels(split, base):
    want = np.mean([np.mean(y == 0) for y in paper_labels(base)])
    score, error = EV.evaluate(in_process(lambda a, b, c: np.zeros(len(c), dtype=int)), split)
    assert error is None
    assert score == pytest.approx(want, abs=1e-12)


def test_column_predictions_are_flattened_no_score_above_1():
    # The released code compared an (n, 1) answer by broadcasting (991 %); ours flattens.
    exact = (PROGRAMS / "lpn_exact.py").read_text()
    column = exact.replace("return (test_samples @ best) % 2", "return ((test_samples @ best) % 2).reshape(-1, 1)")
    assert column != exact
    assert score_solution(TASK, column, "val").score == 1.0
    assert score_solution(TASK, exact, "test").score == 1.0


def test_seed_guesses_at_chance():
    val = score_solution(TASK, TASK.seed, "val")
    test = score_solution(TASK, TASK.seed, "test")
    assert val.error is None and test.error is None
    assert 0.4 < val.score < 0.6 and 0.4 < test.score < 0.6
    # Deterministic: the candidate's generators are seeded per instance.
    assert score_solution(TASK, TASK.seed, "test").score == test.score


@pytest.mark.parametrize("value", [[0] * 19, [[0, 1]] * 20, "0" * 20, None, [0] * 400])
def test_wrong_shapes_score_0_per_instance(value):
    score, error = EV.evaluate(fixed([Outcome(value=value, seconds=0.001)]), "val")
    assert score == 0.0 and "instances scored 0" in error


def test_a_failing_instance_does_not_fail_the_rest():
    outcomes = [Outcome(error="ValueError: boom", seconds=0.01)] + [Outcome(value=[0] * 20, seconds=0.01)] * 19
    score, error = EV.evaluate(fixed(outcomes), "val")
    want = np.mean([0.0] + [np.mean(y == 0) for y in paper_labels(4321)[1:]])
    assert score == pytest.approx(want, abs=1e-12)
    assert error.startswith("1 of 20")

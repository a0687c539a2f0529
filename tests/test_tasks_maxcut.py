"""maxcut: the executed utility against hand-derived expectations (the instances as the released
code draws them; README, "The method")."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import PROGRAMS
from task_helpers import fixed, in_process

from stop_tui.engine.sandbox.process import Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

TASK = load_task("maxcut")
EV = TASK.evaluator


def paper_graph(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    n = random.randint(50, 200)
    edges = {}
    for i in range(n):
        for j in range(i + 1, n):
            if random.random() < 0.4:
                edges[i, j] = random.randint(1, 10)
    return n, edges


def test_instances_follow_the_paper_draw_order():
    for i in (0, 1, 99):
        n, edges = paper_graph(4321 + i)
        weights, _ = EV.make_instance(4321 + i)
        assert weights.shape == (n, n)
        assert {(a, b): int(weights[a, b]) for a, b in zip(*np.nonzero(np.triu(weights)), strict=True)} == edges


def test_all_on_one_side_scores_0():
    same = (PROGRAMS / "maxcut_same_side.py").read_text()
    assert score_solution(TASK, same, "val").score == 0.0


def test_alternating_sides_score_the_derived_fraction():
    want = 0.0
    for i in range(100):
        n, edges = paper_graph(4321 + i)
        cut = sum(w for (a, b), w in edges.items() if a % 2 != b % 2)
        want += cut / sum(edges.values()) / 100
    score, error = EV.evaluate(in_process(lambda A: [k % 2 for k in range(len(A))]), "val")
    assert error is None
    assert score == pytest.approx(want, abs=1e-12)
    assert 0.4 < score < 0.6  # a fraction of the edge weight, not the released cut / 10


def test_any_labels_work_equal_labels_same_side():
    score, _ = EV.evaluate(in_process(lambda A: ["x" if k % 2 else "y" for k in range(len(A))]), "val")
    ints, _ = EV.evaluate(in_process(lambda A: [k % 2 for k in range(len(A))]), "val")
    assert score == ints


@pytest.mark.parametrize("outcome", [Outcome(error="boom", seconds=0.001), Outcome(value=[0, 1], seconds=0.001),
                                     Outcome(value=[[0]] * 200, seconds=0.001), Outcome(value=None, seconds=0.001),
                                     Outcome(value=list(range(200)), seconds=0.2)])
def test_any_failure_fails_the_whole_score(outcome):
    score, error = EV.evaluate(fixed([outcome]), "val")
    assert score == 0.0 and error.startswith("instance 0")


def test_local_search_beats_half_and_the_seed_is_too_slow():
    local = (PROGRAMS / "maxcut_local.py").read_text()
    assert score_solution(TASK, local, "test").score > 0.5
    seed = score_solution(TASK, TASK.seed, "val")  # greedy in pure Python: over 0.1 s (paper: 0 %)
    assert seed.score == 0.0 and "limit 0.1 s" in seed.error

"""grid: the executed utility against hand-derived expectations (the instances as the released
code draws them, the seed's scores as it measured them; README, "The method")."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import PROGRAMS
from task_helpers import fixed, in_process

from stop_tui.engine.sandbox.process import Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

TASK = load_task("grid")
EV = TASK.evaluator


def paper_instances(base: int, count: int):
    """The instances as the released code draws them: global random.seed / np.random.seed per
    instance."""
    out = []
    for i in range(count):
        random.seed(base + i)
        np.random.seed(base + i)
        length = random.randint(1, 30)
        t = "".join(random.choice("AB") for _ in range(length))
        s = "".join(random.choice("AB") for _ in range(length))
        out.append((t, s))
    return out


def dist(s: str, t: str) -> int:
    return (sum(a != b for a, b in zip(s, t, strict=True)) + sum(s[k] != s[k + 1] for k in range(len(s) - 1))
            + sum(t[k] != t[k + 1] for k in range(len(t) - 1)))


def expected(answer_of, base: int) -> float:
    scores = []
    for t, s in paper_instances(base, 50):
        target, d = dist(s, t), dist(answer_of(t), t)
        scores.append(1.0 if d == target else 0.5 - abs(d - target) / (6 * len(t)))
    return sum(scores) / 50


def test_seed_matches_the_released_code_numbers():
    # The seed's scores, measured with the released code.
    assert score_solution(TASK, TASK.seed, "val").score == pytest.approx(0.482934729806, abs=1e-12)
    assert score_solution(TASK, TASK.seed, "test").score == pytest.approx(0.438874651123, abs=1e-12)


def test_instances_follow_the_paper_draw_order():
    for i, (t, s) in enumerate(paper_instances(4321, 50)):
        (t2, target), _ = EV.make_instance(4321 + i)
        assert (t2, target) == (t, dist(s, t))


@pytest.mark.parametrize("split,base", [("val", 4321), ("test", 5678)])
def test_all_a_program_scores_as_derived(split, base):
    score, error = EV.evaluate(in_process(lambda t, d: "A" * len(t)), split)
    assert error is None
    assert score == pytest.approx(expected(lambda t: "A" * len(t), base), abs=1e-12)


def test_an_exact_solver_scores_1_in_the_sandbox():
    exact = (PROGRAMS / "grid_exact.py").read_text()
    assert score_solution(TASK, exact, "val").score == 1.0
    assert score_solution(TASK, exact, "test").score == 1.0


def test_a_failing_instance_scores_0_and_the_rest_count():
    # The released code gives a failing instance 0 and goes on (it does not fail the whole score).
    def answer(t, d):
        if len(t) % 2:
            raise ValueError("odd")
        return t

    score, error = EV.evaluate(in_process(answer), "val")
    want = sum((0.0 if len(t) % 2 else expected_one(t, s)) for t, s in paper_instances(4321, 50)) / 50
    assert score == pytest.approx(want, abs=1e-12)
    assert "instances scored 0" in error and "ValueError" in error


def expected_one(t, s):
    target, d = dist(s, t), dist(t, t)
    return 1.0 if d == target else 0.5 - abs(d - target) / (6 * len(t))


@pytest.mark.parametrize("value", [None, 3, ["A"], "C", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_unusable_answers_score_0(value):
    score, error = EV.evaluate(fixed([Outcome(value=value, seconds=0.001)]), "val")
    assert score == 0.0 and error


def test_the_limit_is_judged_on_the_candidates_own_time():
    # The limit is judged on Outcome.seconds.
    fast = fixed([Outcome(value="A", seconds=0.099)])
    slow = fixed([Outcome(value="A", seconds=0.101)])
    assert EV.evaluate(fast, "val")[0] > 0
    assert EV.evaluate(slow, "val")[0] == 0.0


def test_slow_instances_score_0_in_the_sandbox():
    program = "import time\n\ndef algorithm(t, dist):\n    if len(t) > 25:\n        time.sleep(0.15)\n    return t\n"
    result = score_solution(TASK, program, "val")
    want = sum((0.0 if len(t) > 25 else expected_one(t, s)) for t, s in paper_instances(4321, 50)) / 50
    assert result.score == pytest.approx(want, abs=1e-12)
    assert "limit 0.1 s" in result.error

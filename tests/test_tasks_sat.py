"""sat: the executed utility against hand-derived expectations (the instances as the released
code draws them; README, "The method")."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from conftest import PROGRAMS
from task_helpers import fixed, in_process

from stop_tui.engine.sandbox.process import Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.tasks import load_task

TASK = load_task("sat")
EV = TASK.evaluator


# sha256 of json.dumps([[formula, n], ...]) over a split's 30 instances, recorded from a
# transcription of the released code's draws with the global `random` (per instance: seed,
# n = randint(5, 50), the planted assignment, the clauses, shuffle): a change of the draw order
# changes it.
DRAWN = {4321: "670effbea95912bcec14bb2eba15855008edfca640c0e76cd92f8e6c0253ff9a",
         5678: "45a7e33adebca8f67c1da947c59f4359b6c006eb98452c971233d572fb6edb88"}


def instances(base: int):
    """(formula, n) of a split's 30 instances, as the task draws them."""
    return [EV.make_instance(base + i)[:2] for i in range(30)]


def planted_assignment(seed: int) -> list[bool]:
    """The planted assignment, drawn as the released code does: after n, before the clauses."""
    random.seed(seed)
    n = random.randint(5, 50)
    return [False] + [random.random() < 0.5 for _ in range(n)]


@pytest.mark.parametrize("base", [4321, 5678])
def test_instances_follow_the_released_draw_order(base):
    drawn = json.dumps([[formula, n] for formula, n in instances(base)]).encode()
    assert hashlib.sha256(drawn).hexdigest() == DRAWN[base]


def test_default_time_limit_is_10_ms_as_the_paper_says():
    assert TASK.settings["time_limit"] == 0.01
    assert TASK.takes_settings


def test_a_correct_solver_scores_1():
    solver = (PROGRAMS / "sat_walksat.py").read_text()
    # A generous limit: this checks correctness, not speed.
    assert score_solution(TASK, solver, "val", settings={"time_limit": 5.0}).score == 1.0


@pytest.mark.parametrize("split,base", [("val", 4321), ("test", 5678)])
def test_all_true_scores_as_derived(split, base):
    want = 0.0
    for formula, _n in instances(base):
        ok = all(any(lit > 0 for lit in clause) for clause in formula)
        want += 1.0 if ok else 0.01
    score, error = EV.evaluate(in_process(lambda f: [True] * 51), split, {"time_limit": 1.0})
    assert score == pytest.approx(max(want / 30, 0.01), abs=1e-12)


def test_the_planted_assignment_solves_everything_in_process():
    planted = {tuple(map(tuple, f)): planted_assignment(4321 + i)
               for i, (f, _) in enumerate(instances(4321))}
    score, error = EV.evaluate(in_process(lambda f: planted[tuple(map(tuple, f))]), "val", {"time_limit": 1.0})
    assert (score, error) == (1.0, None)


def test_late_answers_score_001_and_the_limit_is_a_setting():
    late = fixed([Outcome(value=[True] * 51, seconds=0.02)])
    assert EV.evaluate(late, "val", {"time_limit": 0.01})[0] == pytest.approx(0.01)
    assert EV.evaluate(late, "val", {"time_limit": 0.1})[0] > 0.01


@pytest.mark.parametrize("outcome", [Outcome(error="ValueError: x", seconds=0.001),
                                     Outcome(value=None, seconds=0.001),
                                     Outcome(value=[True] * 3, seconds=0.001),
                                     Outcome(value=["yes"] * 51, seconds=0.001)])
def test_an_exception_or_unusable_answer_ends_with_001(outcome):
    assert EV.evaluate(fixed([outcome]), "val", {"time_limit": 0.01})[0] == 0.01


def test_seed_is_a_random_walk_that_returns_none_when_it_gives_up():
    # At the released code's 0.1 s (and beyond) the seed's give-up (None) ends the evaluation
    # with 0.01: the paper's 0 %.
    assert score_solution(TASK, TASK.seed, "val", settings={"time_limit": 10.0}).score == 0.01


def test_the_cli_takes_the_time_limit_setting(tmp_path):
    from conftest import stop_tui

    solver = tmp_path / "walksat.py"
    solver.write_text((PROGRAMS / "sat_walksat.py").read_text())
    proc = stop_tui("score", "--task", "sat", "--set", "time_limit=5", "--json", str(solver))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["score"] == 1.0
    proc = stop_tui("score", "--task", "sat", "--set", "timelimit=5", str(solver))
    assert proc.returncode == 2 and "no setting timelimit" in proc.stderr and "time_limit" in proc.stderr

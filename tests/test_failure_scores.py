"""Failure scores exactly as the released code (issue 9 section 5): a program that fails to LOAD
and one that fails while RUNNING score by each task's own rule, in the real sandbox. The
paper's acceptance rule replaces the improver unless its meta-utility is 0, so 0 and 1e-6 are
not the same thing. And a program that fails to load fails once per evaluation (issue 15
item 10), not once per instance."""

from __future__ import annotations

import ast
import json
import time

import pytest
from conftest import PROGRAMS, stop_tui
from scripted_server import ScriptedLMServer
from task_helpers import fixed, in_process, write_task

from stop_tui.engine import events as ev
from stop_tui.engine.sandbox.process import Limits, Outcome
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.store import SessionStore
from stop_tui.engine.tasks import load_task

# task -> (score when the program fails to load, score when it raises on every instance).
# The released code (microsoft/stop tasks/*/secret_utility.py): lpn returns 0 when
# temp_override fails and eps = 1e-6 on an exception in the loop; parity and grid return 0 on
# load and score a raising instance 0; mqa and three_sat return eps = 0.01 on load, and 0.01
# is their floor. maxcut's scale changed (its evaluate.py): every failure scores 0 there.
RULES = {
    "lpn": (0.0, 1e-6),
    "parity": (0.0, 0.0),
    "grid": (0.0, 0.0),
    "mqa": (0.01, 0.01),
    "sat": (0.01, 0.01),
    "maxcut": (0.0, 0.0),
}

LOAD_FAILURES = {
    "syntax error": ("def algorithm(*args:\n    return 0\n", "SyntaxError"),
    "exception at import": ("raise RuntimeError('top level')\n\ndef algorithm(*args):\n    return 0\n",
                            "RuntimeError: top level"),
    "no algorithm": ("def solve(*args):\n    return 0\n", "defines no `algorithm`"),
}
RAISES = "def algorithm(*args):\n    raise ValueError('boom')\n"


@pytest.mark.parametrize("kind", list(LOAD_FAILURES))
@pytest.mark.parametrize("name", list(RULES))
def test_a_program_that_fails_to_load_scores_the_tasks_load_score(name, kind):
    source, reason = LOAD_FAILURES[kind]
    result = score_solution(load_task(name), source, "val")
    assert result.score == RULES[name][0]
    assert result.error.startswith("the program failed to load: ") and reason in result.error


@pytest.mark.parametrize("name", list(RULES))
def test_a_program_that_fails_while_running_scores_the_tasks_run_score(name):
    result = score_solution(load_task(name), RAISES, "val")
    assert result.score == RULES[name][1]
    assert "ValueError: boom" in result.error and "failed to load" not in result.error


def test_on_lpn_the_two_failures_differ_and_only_a_load_failure_is_0():
    lpn = load_task("lpn")
    load = score_solution(lpn, LOAD_FAILURES["syntax error"][0], "test")
    run = score_solution(lpn, RAISES, "test")
    assert (load.score, run.score) == (0.0, 1e-6)


@pytest.mark.parametrize("name", list(RULES))
def test_evaluate_py_reads_the_rule_from_the_outcome(name):
    # The same evaluate.py rule without a sandbox: what `run` reports decides the score.
    evaluator = load_task(name).evaluator
    load_failure = Outcome(error="SyntaxError: invalid syntax", load_failed=True)
    run_failure = Outcome(error="ValueError: boom", seconds=0.001)
    assert evaluator.evaluate(fixed([load_failure]), "val")[0] == RULES[name][0]
    assert evaluator.evaluate(fixed([run_failure]), "val")[0] == RULES[name][1]


# -- a program that fails to load fails once (issue 15 item 10) ---------------------------

SLOW_TOP_LEVEL = "import time\ntime.sleep(30)\n\ndef algorithm(*args):\n    return 0\n"


@pytest.mark.parametrize("name", ["grid", "parity"])  # 50 and 20 instances, each would reload
def test_top_level_code_over_the_load_limit_is_loaded_once(name):
    limits = Limits(load_seconds=0.5)
    started = time.monotonic()
    result = score_solution(load_task(name), SLOW_TOP_LEVEL, "val", limits=limits)
    elapsed = time.monotonic() - started
    assert result.score == 0.0
    assert "loading the program (its top-level code) timed out after 0.5 s" in result.error
    assert elapsed < 5.0, f"{elapsed:.1f} s: loaded again per instance (20 x 0.5 s = 10 s or more)"


def test_a_user_evaluate_sees_one_load_failure_then_the_same_at_once(tmp_path):
    folder = write_task(tmp_path / "loadonce", (
        "import time\n\n\ndef evaluate(run, split):\n"
        "    seen = []\n"
        "    for _ in range(5):\n"
        "        started = time.monotonic()\n"
        "        out = run(time_limit=1.0)\n"
        "        seen.append((out.load_failed, out.error[:40], round(time.monotonic() - started, 1)))\n"
        "    return 0.5, repr(seen)\n"))
    task = load_task(str(folder))
    result = score_solution(task, SLOW_TOP_LEVEL, "val", limits=Limits(load_seconds=0.4))
    seen = ast.literal_eval(result.error)
    assert [s[0] for s in seen] == [True] * 5
    assert len({s[1] for s in seen}) == 1  # the same failure every time
    assert seen[0][2] >= 0.4 and all(s[2] == 0.0 for s in seen[1:])  # loaded once


def test_a_run_failure_still_gets_a_fresh_sandbox_for_the_next_instance():
    # A crash kills the sandbox; the next instance reloads the program (it did load), so the
    # rest of grid's instances count exactly as they would without the crashes.
    crashing = ("import os\n\n\ndef algorithm(t, dist):\n"
                "    if len(t) % 3 == 0:\n        os._exit(1)\n    return t\n")

    def same_in_process(t, dist):
        if len(t) % 3 == 0:
            raise RuntimeError("crash")
        return t

    grid = load_task("grid")
    expected, _ = grid.evaluator.evaluate(in_process(same_in_process), "val")
    result = score_solution(grid, crashing, "val")
    assert 0 < result.score == pytest.approx(expected, abs=1e-12)
    assert "failed to load" not in result.error and "exited" in result.error


# -- what it changes in STOP: the paper's acceptance rule ----------------------------------

def improver_returning(solution: str) -> str:
    return ("def improve_algorithm(initial_solution, utility, language_model):\n"
            f"    return {solution!r}\n")


@pytest.mark.parametrize("solution,verdict", [
    (LOAD_FAILURES["syntax error"][0], "rejected"),  # its solutions score 0: û = 0
    (RAISES, "accepted"),  # its solutions score 1e-6 on lpn: û = 1e-6, not 0
])
@pytest.mark.slow
def test_the_paper_rule_rejects_an_improver_whose_programs_do_not_load(sessions_dir, solution, verdict):
    exact = (PROGRAMS / "lpn_exact.py").read_text()
    improver = improver_returning(solution)

    def responder(body, index):
        wanted = improver if "def improve_algorithm" in body["messages"][-1]["content"] else exact
        return f"An idea.\n```python\n{wanted}```\n"

    with ScriptedLMServer(responder) as server:
        proc = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", "1", "--acceptance", "paper",
                        "--sessions-dir", str(sessions_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    store = SessionStore(sessions_dir / json.loads(proc.stdout)["session"])
    (it1,) = [e for e in store.events(kinds=(ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED))
              if e.data["iteration"] == 1]
    store.close()
    if verdict == "rejected":
        assert it1.kind == ev.ITERATION_REJECTED and it1.data["reason"] == "the new improver scored 0"
        assert it1.data["val"] == 0.0
    else:
        assert it1.kind == ev.ITERATION_ACCEPTED and it1.data["val"] == pytest.approx(1e-6)

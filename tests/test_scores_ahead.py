"""A downstream improver run's scorings (engine/scores_ahead.py, issue 13): the run's final val
is the score its utility already gave that program; on idle cores the programs of an LM reply
are scored at once, before the improver asks; the log reads the same either way."""

from __future__ import annotations

import os
import threading
import time

import pytest
from lm_helpers import IMPROVER, fenced
from scripted_server import ScriptedLMServer
from task_helpers import write_task

from stop_tui.engine import cores
from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings

# Each evaluation notes its split and program in EVAL_LOG, then takes a second of the trusted
# side's time (a sleep: the same on a busy machine).
SLOW = '''
import os
import time

SPLITS = {"val": (1, 1), "test": (2, 1)}


def evaluate(run, split):
    out = run(time_limit=5.0)
    with open(os.environ["EVAL_LOG"], "a") as log:
        log.write(f"{split} {out.value}\\n")
    time.sleep(1.0)
    if out.error:
        return 0.0, out.error
    return out.value / 10 + (0.05 if split == "test" else 0.0)
'''

# An improver that scores only the first program of the LM's reply.
FIRST_ONLY = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    replies = language_model.batch_prompt("You improve programs.", ["Improve it."] * 2, temperature=0.7)
    first = extract_code(replies)[0]
    utility(first)
    return first
'''


def programs(body: dict, i: int) -> str:
    """Reply i: a program returning (request seed + i) % 7, so each reply's two differ."""
    return fenced(f"def algorithm():\n    return {(int(body.get('seed', 0)) + i) % 7}\n")


def machine(monkeypatch, load: float) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(cores, "_busy_elsewhere", lambda: load)


def one_run(tmp_path, sessions_dir, monkeypatch, improver: str, *, with_test: bool):
    """û of `improver` on the slow task (one run): (its score, the SOLUTION_SCORED events, the
    evaluations made, seconds from the run's LM reply to its end, each scoring's seconds)."""
    folder = write_task(tmp_path / "slowtask", SLOW)
    log = tmp_path / "evaluations.log"
    log.touch()
    monkeypatch.setenv("EVAL_LOG", str(log))
    with ScriptedLMServer(programs, honour_n=True) as server:
        session = new_session(sessions_dir, str(folder), session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        try:
            result = session.engine.meta_score(improver, "probe", with_test=with_test)
            events = list(session.store.events())
        finally:
            session.close()
    replied = next(e.t for e in events if e.kind == ev.LM_REPLY)
    finished = next(e.t for e in events if e.kind == ev.RUN_FINISHED)
    scored = [(e.path, e.data["split"], e.data["score"]) for e in events if e.kind == ev.SOLUTION_SCORED]
    times = [e.data["seconds"] for e in events if e.kind == ev.SOLUTION_SCORED]
    return result, scored, log.read_text().split("\n")[:-1], finished - replied, times


@pytest.mark.parametrize("load", [0.0, 1.5])
def test_the_final_val_is_the_score_the_utility_gave(tmp_path, sessions_dir, monkeypatch, load):
    machine(monkeypatch, load)
    result, scored, made, _, times = one_run(tmp_path, sessions_dir, monkeypatch, IMPROVER, with_test=True)
    (_, _, first), (_, _, second) = scored[:2]
    best = max(first, second)
    assert [(p, s) for p, s, _ in scored] == [("probe/r1/s1", "val"), ("probe/r1/s2", "val"),
                                              ("probe/r1/final", "val"), ("probe/r1/final", "test")]
    assert scored[2][2] == best and result.val == best
    assert scored[3][2] == pytest.approx(best + 0.05) and result.test == pytest.approx(best + 0.05)
    # Two val evaluations (one per program) and the returned one's test: no second val of it,
    # and its recorded time says so.
    assert sorted(line.split()[0] for line in made) == ["test", "val", "val"], made
    assert [seconds > 0 for seconds in times] == [True, True, False, True], times


def test_on_idle_cores_a_replys_programs_are_scored_at_once(tmp_path, sessions_dir, monkeypatch):
    machine(monkeypatch, 0.0)
    _, scored, made, took, _ = one_run(tmp_path, sessions_dir, monkeypatch, IMPROVER, with_test=False)
    assert [(p, s) for p, s, _ in scored] == [("probe/r1/s1", "val"), ("probe/r1/s2", "val"),
                                              ("probe/r1/final", "val")]
    assert len(made) == 2
    assert took < 1.8, took  # one after the other: over 2 s


def test_on_a_loaded_machine_they_are_scored_when_asked(tmp_path, sessions_dir, monkeypatch):
    machine(monkeypatch, 1.5)  # one core left: a second evaluation would slow the first
    _, scored, made, took, _ = one_run(tmp_path, sessions_dir, monkeypatch, IMPROVER, with_test=False)
    assert [(p, s) for p, s, _ in scored] == [("probe/r1/s1", "val"), ("probe/r1/s2", "val"),
                                              ("probe/r1/final", "val")]
    assert len(made) == 2
    assert took >= 2.0, took


def test_a_program_scored_ahead_and_never_asked_for_is_not_recorded(tmp_path, sessions_dir, monkeypatch):
    machine(monkeypatch, 0.0)
    result, scored, made, _, _ = one_run(tmp_path, sessions_dir, monkeypatch, FIRST_ONLY, with_test=False)
    assert [(p, s) for p, s, _ in scored] == [("probe/r1/s1", "val"), ("probe/r1/final", "val")]
    assert result.val == scored[0][2]
    assert 1 <= len(made) <= 2  # the second program's scoring ahead: started, or not yet
    deadline = time.monotonic() + 10
    while any(t.name.startswith("score-ahead") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a scoring ahead outlived its run by 10 s"
        time.sleep(0.05)

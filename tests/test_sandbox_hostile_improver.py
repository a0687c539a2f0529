"""Hostile improvers against the engine's clocks and lifetimes (issue 14, items 3 and 11).

- An improver's clock frozen by a utility call in flight: own time excludes the engine's
  waits, so an improver keeping one utility call open in a thread while it computes in another
  froze its clock (40 s against a 10 s limit, own time 0.0). A wall-clock cap per improver
  run counts everything.
- Scoring outlives the improver: an improver that starts utility calls in threads and returns
  left those scorings (each its own sandbox) running for 100 s. When an improver run ends,
  what it started ends with it: no sandbox of it remains, nothing more is logged for it.
"""

from __future__ import annotations

import time

import pytest
from test_sandbox_hostile import ZEROS, run_uid_processes

from stop_tui.engine import events as ev
from stop_tui.engine.improver import Utility, run_improver
from stop_tui.engine.lm.base import Completions
from stop_tui.engine.lm.service import LMService
from stop_tui.engine.sandbox.process import Limits
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.session import new_session, session_settings
from stop_tui.engine.tasks import load_task

pytestmark = pytest.mark.timeout(180)

LPN = load_task("lpn")
SLOW = "import time\\ndef algorithm(a, b, c):\\n    time.sleep(1.9)\\n    return [0] * len(c)\\n"


class IdleBackend:
    """An LM that is never asked (these improvers make no LM call)."""

    model = "scripted"
    price_key = "local"
    honours_n = True

    def request(self, system, user, *, n, temperature, max_tokens, seed=None) -> Completions:
        return Completions(texts=[f"```python\n{ZEROS}```"] * n, prompt_tokens=1, completion_tokens=1)

    complete = request

    def close(self) -> None:
        pass


FROZEN_CLOCK = r'''
import threading, time

SLOW = "%s"

def improve_algorithm(initial_solution, utility, language_model):
    holder = threading.Thread(target=lambda: [utility(SLOW) for _ in range(25)], daemon=True)
    holder.start()  # keeps one utility call in flight, all the time
    time.sleep(0.3)
    started = time.time()
    while time.time() - started < 60:  # computes meanwhile, on a "frozen" own-time clock
        sum(i * i for i in range(1000))
    return initial_solution
''' % SLOW


def test_a_utility_call_in_flight_does_not_freeze_the_wall_clock():
    events: list = []
    service = LMService(IdleBackend(), max_tokens=64, seed=0, emit=events.append,
                        put_text=lambda t: str(hash(t)))
    utility = Utility(LPN.displayed, 25,
                      lambda src, k: score_solution(LPN, src, "val", cancel=utility.cancel).score)
    started = time.monotonic()
    try:
        out = run_improver(FROZEN_CLOCK, ZEROS, utility, service.handle("t/r1", 2, 2),
                           limits=Limits(), time_limit=10.0, seed=1, wall_limit=3.0)
    finally:
        service.close()
    took = time.monotonic() - started
    assert out.error is not None and out.error.startswith("ran past its wall-clock limit of 3 s"), out.error
    assert out.seconds < 1.0  # (its own time stayed frozen: the wall clock is what caught it)
    assert took < 10, took
    assert utility.uses == 1


def test_the_wall_clock_cap_is_generous_by_default_and_scales_with_the_budgets(tmp_path):
    settings = session_settings("quick", improver_time_limit=30.0)
    session = new_session(tmp_path, "lpn", settings, IdleBackend())
    try:
        engine = session.engine
        assert engine._wall_limit(False) == 300.0  # 10 x the own-time limit
        assert engine._wall_limit(True) == 300.0 * (1 + settings.meta_utility_budget)
        capped = session_settings("quick", improver_wall_limit=12.0)
        assert type(engine)(session.store, capped, engine.task, engine.meta, engine.lm,
                            engine.gate)._wall_limit(False) == 12.0
    finally:
        session.close()


LEAVES_SCORINGS = r'''
import threading, time

SLOW = "%s"

def improve_algorithm(initial_solution, utility, language_model):
    for _ in range(3):
        threading.Thread(target=utility, args=(SLOW,), daemon=True).start()
    time.sleep(1.0)  # the three scorings are under way (each its own sandbox)
    return %r
''' % (SLOW, ZEROS)


def test_scorings_an_improver_left_in_flight_end_with_its_run(tmp_path):
    session = new_session(tmp_path, "lpn", session_settings("quick"), IdleBackend())
    try:
        result = session.engine.meta_score(LEAVES_SCORINGS, "hostile", with_test=False)
        ended = time.monotonic()
        events = list(session.store.events())
        finished = [e for e in events if e.kind == ev.RUN_FINISHED]
        assert len(finished) == 1 and finished[0].data["error"] is None
        assert finished[0].data["utility_uses"] == 3
        assert result.val == pytest.approx(0.5025)  # its returned program (all zeros), scored
        deadline = ended + 2.0
        while run_uid_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not run_uid_processes(), "a scoring of the ended run is still running"
        time.sleep(max(0.0, deadline - time.monotonic()) + 1.0)
        later = list(session.store.events(after=events[-1].seq))
        assert later == [], [(e.kind, e.path) for e in later]
        scored = [e.path for e in events if e.kind == ev.SOLUTION_SCORED]
        assert scored == ["hostile/r1/final"], scored  # the left-behind scorings recorded nothing
    finally:
        session.close()

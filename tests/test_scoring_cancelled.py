"""A scoring stopped because the improver run that asked for it ended is recorded as ended,
unscored: its improver run and candidate do not read as running forever (the TUI's tree), and
no reader counts it as scored or failed (the summary, the TUI)."""

from __future__ import annotations

import time

import pytest
from lm_helpers import ZEROS, CannedBackend

from stop_tui.engine import events as ev
from stop_tui.engine.session import new_session, session_settings
from stop_tui.engine.summary import summarize
from stop_tui.tui.model import ACCEPTED, CANCELLED, SCORED, SessionModel

pytestmark = pytest.mark.timeout(180)

RETURNS_ITS_INPUT = "def improve_algorithm(initial_solution, utility, language_model):\n" \
                    "    return initial_solution\n"
SLOW_CANDIDATE = "import time\n\ndef improve_algorithm(initial_solution, utility, language_model):\n" \
                 "    time.sleep(60)\n    return initial_solution\n"
# An iteration's improver that asks û about a slow candidate in a thread, then returns
# without waiting for the answer: the candidate's scoring is cancelled when this run ends.
LEAVES_A_CANDIDATE = r'''
import threading, time

def improve_algorithm(initial_solution, utility, language_model):
    threading.Thread(target=utility, args=(__SLOW__,), daemon=True).start()
    time.sleep(2.0)  # the candidate's improver run has started
    return __RETURNED__
'''.replace("__SLOW__", repr(SLOW_CANDIDATE)).replace("__RETURNED__", repr(RETURNS_ITS_INPUT))


def test_a_candidate_cancelled_with_its_asking_run_is_recorded_unscored(tmp_path):
    # An LM that is never asked (these improvers make no LM call).
    session = new_session(tmp_path, "lpn", session_settings("quick"), CannedBackend([ZEROS], [ZEROS]))
    try:
        engine = session.engine
        engine.state.improver, engine.state.seed_scored = LEAVES_A_CANDIDATE, True
        started = time.monotonic()
        engine.iterate(1)
        assert time.monotonic() - started < 40  # not the candidate's 60 s
        events = list(session.store.events())
        model = SessionModel(session.store.meta(), session.store.id)
        model.ingest_all(events)
        summary = summarize(session.store)
    finally:
        session.close()
    cancelled = {e.path: e.data for e in events if e.kind == ev.SCORING_CANCELLED}
    assert set(cancelled) == {"it1/c1/r1", "it1/c1"}, cancelled
    assert "improver run that asked" in cancelled["it1/c1"]["reason"]
    ended = {e.path for e in events if e.kind in (ev.RUN_FINISHED, ev.CANDIDATE_SCORED,
                                                   ev.SCORING_CANCELLED)}
    opened = {e.path for e in events if e.kind in (ev.RUN_STARTED, ev.CANDIDATE_PROPOSED)}
    assert opened <= ended, f"never ended: {opened - ended}"
    assert not [e for e in events if e.kind in (ev.RUN_FINISHED, ev.CANDIDATE_SCORED)
                and e.path.startswith("it1/c1")], "a cancelled scoring recorded a score"
    # The TUI: ended, unscored, neither running nor failed; the check still scored.
    for path in ("it1/c1", "it1/c1/r1"):
        node = model.nodes[path]
        assert (node.status, node.score) == (CANCELLED, None), (path, node.status, node.score)
    assert model.nodes["it1/check"].status in (SCORED, ACCEPTED)
    assert list(model.candidate_scores) == []
    # The summary: no candidate scored, none failed; the iteration was decided.
    assert (summary["candidates_scored"], summary["candidates_failed"]) == (0, 0)
    assert [row["iteration"] for row in summary["iterations"]] == [1]

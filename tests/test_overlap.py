"""What the engine does at once instead of one after the other (issue 13): a run's final val
and test evaluations, and the LM client made while the sandbox starts."""

from __future__ import annotations

import os
import time

from lm_helpers import responder
from scripted_server import ScriptedLMServer
from task_helpers import RETURNS_0, write_task

from stop_tui.engine import cores as cores_module
from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings

# Each evaluation takes a second of the trusted side's time (a sleep: the same on a busy machine).
SLOW = '''
import time

SPLITS = {"val": (1, 1), "test": (2, 1)}


def evaluate(run, split):
    out = run(time_limit=5.0)
    time.sleep(1.0)
    if out.error:
        return 0.0, out.error
    return 0.25 if split == "val" else 0.75
'''


def machine(monkeypatch, cores: int, load: float) -> None:
    """What cores.idle_cores reads of the machine: its cores for this process, and how many
    of them the rest of the machine keeps busy."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(cores_module, "_busy_elsewhere", lambda: load)


def final_scoring(tmp_path, sessions_dir) -> tuple[tuple[float, float], float, list]:
    """A run's final val and test of the slow task: the scores, the seconds it took, the events."""
    folder = write_task(tmp_path / "slowtask", SLOW)
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, str(folder), session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        try:
            started = time.monotonic()
            val, test = session.engine.score_val_and_test(RETURNS_0, "probe/final")
            took = time.monotonic() - started
            scored = list(session.store.events(kinds=(ev.SOLUTION_SCORED,)))
        finally:
            session.close()
        assert server.requests == []
    return (val, test), took, scored


def recorded_val_first(scored: list) -> bool:
    return ([(e.path, e.data["split"], e.data["score"]) for e in scored]
            == [("probe/final", "val", 0.25), ("probe/final", "test", 0.75)]
            and all(e.data["seconds"] >= 1.0 for e in scored))


def test_on_idle_cores_a_final_val_and_test_take_the_time_of_one(tmp_path, sessions_dir, monkeypatch):
    machine(monkeypatch, cores=2, load=0.0)
    scores, took, scored = final_scoring(tmp_path, sessions_dir)
    assert scores == (0.25, 0.75) and recorded_val_first(scored)
    assert took < 1.8, took  # one after the other: over 2 s


def test_on_a_loaded_machine_they_run_one_after_the_other(tmp_path, sessions_dir, monkeypatch):
    machine(monkeypatch, cores=2, load=1.5)  # one core left: a second evaluation would slow the first
    scores, took, scored = final_scoring(tmp_path, sessions_dir)
    assert scores == (0.25, 0.75) and recorded_val_first(scored)
    assert took >= 2.0, took


def test_warm_makes_the_client_without_contacting_the_server():
    with ScriptedLMServer(responder) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        backend.warm()
        backend.warm()  # once is enough: a second call starts nothing
        warming = backend._warming
        assert warming is not None
        warming.join(60)
        assert backend._client is not None and backend._warming is warming
        assert server.requests == [] and server.gets == 0
        got = backend.request("system", "hello", n=2, temperature=0.7, max_tokens=64, seed=1)
        assert len(got.texts) == 2 and len(server.requests) == 1
        backend.close()


def test_warm_leaves_a_missing_key_to_the_first_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    backend = OpenAIBackend("gpt-4o-mini")  # OpenAI itself, no key: nothing to warm
    backend.warm()
    assert backend._warming is None and backend._client is None
    backend.close()

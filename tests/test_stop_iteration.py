"""One STOP iteration end to end through the real `openai` client against a scripted
OpenAI-compatible server on 127.0.0.1: the meta-utility, budgets and token sums come out
exactly as scripted."""

from __future__ import annotations

import json

import pytest
from conftest import PROGRAMS, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.store import SessionStore
from stop_tui.engine.tasks import load_task

EXACT = (PROGRAMS / "lpn_exact.py").read_text()
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
FIRST = (PROGRAMS / "improver_first.py").read_text()
IDENTITY = (PROGRAMS / "improver_identity.py").read_text()


def fenced(code: str) -> str:
    return f"Here is my idea, then the code.\n```python\n{code}```\nDone."


def responder(body: dict, index: int) -> str:
    """Downstream requests get [exact solver, zeros]; requests to improve an improver get
    [FIRST (returns the LM's first program), IDENTITY (returns its input)]."""
    user = body["messages"][-1]["content"]
    if "def improve_algorithm" in user:
        return fenced([FIRST, IDENTITY][index % 2])
    return fenced([EXACT, ZEROS][index % 2])


def test_one_iteration_scores_budgets_and_tokens(sessions_dir):
    lpn = load_task("lpn")
    exact_val = score_solution(lpn, EXACT, "val").score
    exact_test = score_solution(lpn, EXACT, "test").score
    with ScriptedLMServer(responder) as server:
        proc = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir),
                        "--json", env={"OPENAI_API_KEY": "sk-test-secret"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # I0 asks for 2 solutions (min(2 samples, budget 5)), keeps the exact solver.
    assert summary["seed_meta_utility"] == exact_val == 1.0
    # Iteration 1: I0 proposes FIRST and IDENTITY; û(FIRST) = u(exact) beats û(IDENTITY) =
    # u(seed); the re-check gives val and test of the exact solver; the paper rule accepts.
    assert summary["meta_utility"] == [exact_val]
    assert summary["meta_utility_test"] == [exact_test]
    assert summary["best_meta_utility"] == exact_val
    assert summary["iterations_completed"] == 1
    # Calls: it0 seed run 1, it1 improver 1, û(FIRST) run 1, re-check run 1; IDENTITY none.
    # Samples: 2 + 2 + 1 + 1. The server honours n: one request per call.
    lm = summary["lm"]
    assert (lm["calls"], lm["requests"], lm["completions"]) == (4, 4, 6)
    assert len(server.requests) == 4
    assert lm["prompt_tokens"] == server.prompt_tokens > 0
    assert lm["completion_tokens"] == server.completion_tokens > 0
    assert lm["cost_usd"] is None  # an unpriced model: tokens only
    assert [r.get("n", 1) for r in server.requests] == [2, 2, 1, 1]
    assert all(r["max_tokens"] == 512 and r["temperature"] == 0.7 for r in server.requests)

    store = SessionStore(sessions_dir / summary["session"])
    scored = {e.path: e.data for e in store.events(kinds=(ev.CANDIDATE_SCORED,))}
    assert scored["it1/c1"]["score"] == exact_val
    assert scored["it1/c2"]["score"] == pytest.approx(score_solution(lpn, lpn.seed, "val").score)
    accepted = list(store.events(kinds=(ev.ITERATION_ACCEPTED,)))
    assert [e.data["iteration"] for e in accepted] == [0, 1]
    assert store.text(accepted[1].data["improver"]).strip() == FIRST.strip()
    assert store.meta()["settings"]["seed"] == 0
    store.close()
    # The key the user exported is used, never stored.
    for stored in (sessions_dir / summary["session"]).iterdir():
        assert b"sk-test-secret" not in stored.read_bytes()


def test_server_that_ignores_n_gets_concurrent_single_requests(sessions_dir):
    with ScriptedLMServer(responder, honour_n=False) as server:
        proc = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", "0", "--sessions-dir", str(sessions_dir),
                        "--json")
    assert proc.returncode == 0, proc.stderr
    lm = json.loads(proc.stdout)["lm"]
    # One call of 2 samples: the first request asked n=2 and got 1 back, then 1 more request.
    assert (lm["calls"], lm["requests"], lm["completions"]) == (1, 2, 2)
    assert lm["completion_tokens"] == server.completion_tokens


def test_call_budget_is_enforced_by_the_engine(sessions_dir):
    from stop_tui.engine.lm.openai_backend import OpenAIBackend
    from stop_tui.engine.session import new_session, session_settings

    greedy = (PROGRAMS / "improver_greedy_calls.py").read_text()
    with ScriptedLMServer(lambda body, i: "no code") as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("quick"), backend)
        result = session.engine.meta_score(greedy, "probe", with_test=False)
        session.close()
    assert result.val == 0.0
    assert "exceeded your call budget" in result.errors[0]
    assert len(server.requests) == 2  # quick preset: 2 calls per improver run, the third refused


def test_reply_without_code_fails_the_candidate_not_the_run(sessions_dir):
    with ScriptedLMServer(lambda body, i: "I would rather talk about it.") as server:
        proc = stop_tui("run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
                        "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir),
                        "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["iterations"][1]["accepted"] is False
    assert "no program" in summary["iterations"][1]["reason"]

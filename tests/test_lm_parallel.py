"""Parallel LM requests: one request with n where the server honours n, n concurrent single
requests where it does not (detected from the first reply, not guessed by name), bounded by
--max-concurrency, and reported (LM_REPLY `concurrency`, run --json lm.max_concurrency_reached)."""

from __future__ import annotations

import json

import pytest
from lm_helpers import IMPROVER, events_of, responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings


def test_server_honouring_n_gets_one_request_per_batch(sessions_dir):
    with ScriptedLMServer(responder, honour_n=True) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("paper"), backend)
        lm = session.engine.lm.handle("probe", 4, 6)
        replies = lm.batch_prompt("system", ["same"] * 6)
        mixed = lm.batch_prompt("system", ["a", "b", "a", "a"])
        session.close()
        bodies = list(server.requests)
    assert backend.honours_n is True
    assert len(replies) == 6 and all(replies) and len(set(replies)) > 1
    assert len(mixed) == 4 and all(mixed)
    # 6 identical: one request with n=6; then "a" x3 with n=3 and "b" alone.
    assert sorted(b.get("n", 1) for b in bodies) == [1, 3, 6]


def test_server_ignoring_n_gets_concurrent_single_requests(sessions_dir):
    with ScriptedLMServer(responder, honour_n=False, latency=0.3) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("paper"), backend)
        lm = session.engine.lm.handle("probe", 4, 6)
        replies = lm.batch_prompt("system", ["same"] * 6)
        assert backend.honours_n is False  # learned from the first reply (1 choice for n=6)
        again = lm.batch_prompt("system", ["other"] * 6)
        session.close()
        peak, bodies = server.max_inflight, list(server.requests)
    assert all(replies) and all(again)
    # First call: n=6 answered with one choice, then 5 singles at once. Second call: 6 singles.
    assert [b.get("n", 1) for b in bodies].count(6) == 1 and len(bodies) == 12
    assert peak >= 5
    reply = [e for e in events_of(sessions_dir, session.id) if e.kind == ev.LM_REPLY][-1]
    assert reply.data["requests"] == 6 and reply.data["concurrency"] >= 5
    # Each sample has its own seed: the samples differ and a resume asks for the same ones.
    seeds = sorted(b["seed"] for b in bodies[6:])
    assert seeds == list(range(seeds[0], seeds[0] + 6))


@pytest.mark.slow
def test_max_concurrency_bounds_requests_in_flight(sessions_dir):
    with ScriptedLMServer(responder, honour_n=False, latency=0.1) as server:
        proc = stop_tui(*run_args(server, sessions_dir, "--max-concurrency", "1", "--json"))
        bounded = server.max_inflight
    with ScriptedLMServer(responder, honour_n=False, latency=0.1) as server:
        free = stop_tui(*run_args(server, sessions_dir, "--json"))
        unbounded = server.max_inflight
    assert proc.returncode == 0 and free.returncode == 0, proc.stderr + free.stderr
    one, many = json.loads(proc.stdout), json.loads(free.stdout)
    assert bounded == 1 and one["lm"]["max_concurrency_reached"] == 1
    assert one["lm"]["max_concurrency"] == 1
    assert unbounded >= 2 and many["lm"]["max_concurrency_reached"] >= 2
    assert one["meta_utility"] == many["meta_utility"]


def test_meta_utility_runs_keep_the_server_busy(sessions_dir):
    """The runs inside one û call proceed concurrently: with 3 runs, 3 calls are in flight."""
    with ScriptedLMServer(responder, honour_n=True, latency=0.5) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("quick", meta_runs=3), backend)
        result = session.engine.meta_score(IMPROVER, "probe", with_test=False)
        session.close()
        peak = server.max_inflight
    assert not result.errors and peak == 3


THREADED_UTILITY = '''
import threading
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Scores its candidates from threads: the engine serves the û calls concurrently."""
    message = f"Improve this improver:\\n```python\\n{initial_solution}\\n```\\ndef improve_algorithm"
    candidates = [c for c in extract_code(language_model.batch_prompt("expert", [message] * 2)) if c]
    scores = {}

    def score(k):
        scores[k] = utility(candidates[k])

    threads = [threading.Thread(target=score, args=(k,)) for k in range(len(candidates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return candidates[max(scores, key=scores.get)] if scores else initial_solution
'''


def test_candidates_scored_from_threads_run_concurrently(sessions_dir):
    """An improver that calls its utility from two threads: both candidates' meta-utility
    runs (and their LM calls) are in flight together."""
    with ScriptedLMServer(responder, honour_n=True, latency=0.5) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("quick"), backend)
        session.engine.state.improver = THREADED_UTILITY
        session.engine.state.seed_scored = True
        session.engine.iterate(1)
        session.close()
        peak = server.max_inflight
    events = events_of(sessions_dir, session.id)
    scored = [e.path for e in events if e.kind == ev.CANDIDATE_SCORED and e.data["role"] == "candidate"]
    assert sorted(scored) == ["it1/c1", "it1/c2"]
    assert peak >= 2

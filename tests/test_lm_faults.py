"""Faults between the engine and a real HTTP server on 127.0.0.1: 429 / 500 (with
Retry-After), dropped connections, timeouts, malformed and truncated bodies. The run completes,
every attempt is counted and logged, tokens are what the server billed, and a failed request
never costs the improver a second use of its call budget."""

from __future__ import annotations

import json
import random
import time

import pytest
from lm_helpers import events_of, responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend, _retry_after
from stop_tui.engine.lm.retry import RetryPolicy
from stop_tui.engine.session import new_session, session_settings


@pytest.mark.slow
def test_run_completes_through_429_500_and_dropped_connections(sessions_dir):
    with ScriptedLMServer(responder, honour_n=False, latency=0.02, fail_rate=0.3,
                          drop_rate=0.1, fail_seed=7) as server:
        proc = stop_tui(*run_args(server, sessions_dir, "--json"))
        failed, dropped, sent = server.failed, server.faults["drop"], len(server.requests)
        billed = (server.prompt_tokens, server.completion_tokens, server.answered)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    lm = summary["lm"]
    assert failed + dropped > 0  # the faults happened
    assert lm["failed"] == 0  # and every completion was obtained in the end
    # Exact accounting: tokens are the server's bill; every attempt is a request; every
    # failed attempt is a retry, logged as an LM_RETRY event.
    assert (lm["prompt_tokens"], lm["completion_tokens"]) == billed[:2]
    assert lm["requests"] == sent
    assert lm["retries"] == failed + dropped == sent - billed[2]
    events = events_of(sessions_dir, summary["session"])
    retries = [e for e in events if e.kind == ev.LM_RETRY]
    assert len(retries) == lm["retries"]
    assert {r.data["status"] for r in retries} <= {429, 500, None}
    # The same meta-utility as a clean run: faults change nothing but the bill of attempts.
    with ScriptedLMServer(responder, honour_n=False) as clean:
        reference = json.loads(stop_tui(*run_args(clean, sessions_dir, "--json")).stdout)
    assert summary["meta_utility"] == reference["meta_utility"]
    assert lm["calls"] == reference["lm"]["calls"]
    # One use per call however many attempts: every run used its calls exactly once.
    runs = [e for e in events if e.kind == ev.RUN_FINISHED]
    assert sum(r.data["lm_uses"] for r in runs) + 1 == lm["calls"]  # + the iteration's own call


def test_retry_after_is_honoured(sessions_dir):
    with ScriptedLMServer(responder, fail_rate=0.5, fail_seed=3, retry_after="1") as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        lm = session.engine.lm.handle("probe", 4, 2)
        started = time.monotonic()
        replies = [lm.prompt("system", f"question {k}") for k in range(4)]
        elapsed = time.monotonic() - started
        session.close()
        failed = server.failed
    assert failed >= 1 and all(r[0] for r in replies)
    waits = [e.data["wait"] for e in events_of(sessions_dir, session.id) if e.kind == ev.LM_RETRY]
    assert len(waits) == failed and all(w >= 1.0 for w in waits)
    assert elapsed >= failed * 1.0


def test_retry_after_forms():
    class Response:
        def __init__(self, headers):
            self.headers = headers

    assert _retry_after(Response({"retry-after": "2"})) == 2.0
    assert _retry_after(Response({"retry-after-ms": "1500"})) == 1.5
    assert _retry_after(Response({})) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= _retry_after(Response({"retry-after": date})) <= 31
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(0)
    assert all(0 <= policy.delay(k, None, rng) <= min(4.0, 0.5 * 2 ** (k - 1)) for k in range(1, 9))
    assert 3.0 <= policy.delay(1, 3.0, rng) <= 3.25


def test_exhausted_retries_fail_the_completions_not_the_budget(sessions_dir):
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        session.engine.lm.policy = RetryPolicy(attempts=3, base=0.01)
        lm = session.engine.lm.handle("probe", 3, 2)
        assert lm.prompt("system", "first")[0]  # the server works (else a failure pauses the run)
        server.fail_rate = 1.0
        replies = lm.batch_prompt("system", ["q", "q"])
        second = lm.prompt("system", "another")
        usage = session.engine.lm.usage
        session.close()
        sent = len(server.requests)
    assert replies == ["", ""] and second == [""]
    assert lm.uses == 3  # one use per call, not per attempt
    assert sent == 7 and usage.requests == 7 and usage.retries == 4
    assert usage.failed == 3 and usage.completions == 1


def test_timeouts_are_retried_then_fail(sessions_dir):
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url, timeout=0.3))
        session.engine.lm.policy = RetryPolicy(attempts=2, base=0.01)
        lm = session.engine.lm.handle("probe", 2, 1)
        assert lm.prompt("system", "quick")[0]  # the server works (else a failure pauses the run)
        server.latency = 1.0
        assert lm.prompt("system", "slow") == [""]
        session.close()
    reply = [e for e in events_of(sessions_dir, session.id) if e.kind == ev.LM_REPLY][1]
    assert reply.data["failed"] == 1 and reply.data["requests"] == 2
    assert "Timeout" in reply.data["error"] or "timed out" in reply.data["error"].lower()


def test_malformed_and_truncated_replies_are_failed_completions(sessions_dir):
    with ScriptedLMServer(responder, honour_n=False, malformed_rate=0.3, truncate_rate=0.3,
                          fault_seed=5) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        lm = session.engine.lm.handle("probe", 8, 2)
        replies = [r for k in range(8) for r in lm.batch_prompt("system", [f"q{k}"] * 2)]
        usage = session.engine.lm.usage
        session.close()
        bad = server.faults["malformed"] + server.faults["truncate"]
        sent, billed = len(server.requests), server.completion_tokens
    assert bad > 0
    assert replies.count("") == bad == usage.failed  # each unreadable reply: one failed completion
    assert usage.requests == sent and usage.retries == 0  # not retried: the server did the work
    parts = [e.data for e in events_of(sessions_dir, session.id) if e.kind == ev.LM_PART]
    broken = [p for p in parts if p.get("error")]
    assert len(broken) == bad and all("malformed reply" in p["error"] and p["usage_missing"] for p in broken)
    # Tokens counted are those the engine could read; the unreadable replies' are unknown.
    assert usage.completion_tokens < billed


def test_server_wanting_max_completion_tokens(sessions_dir):
    """A server that refuses `max_tokens` (newer OpenAI models): switch to
    `max_completion_tokens` once, counted as one retried attempt, then keep it."""
    with ScriptedLMServer(responder, reject_max_tokens=True) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        session = new_session(sessions_dir, "lpn", session_settings("quick"), backend)
        lm = session.engine.lm.handle("probe", 2, 2)
        first, second = lm.prompt("system", "one"), lm.prompt("system", "two")
        usage = session.engine.lm.usage
        session.close()
        bodies = list(server.requests)
    assert first[0] and second[0]
    assert backend.tokens_param == "max_completion_tokens"
    assert ["max_tokens" in b for b in bodies] == [True, False, False]
    assert bodies[1]["max_completion_tokens"] == 512
    assert usage.requests == 3 and usage.retries == 1 and usage.failed == 0

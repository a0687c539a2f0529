"""What real servers do (issue 9, sections 3 and 4), against the scripted server on 127.0.0.1:
model names as Ollama and llama.cpp's server serve them, a model that does not exist, reasoning
models that refuse temperatures and bill reasoning tokens, and the prompt-size guard."""

from __future__ import annotations

import json

import pytest
from lm_helpers import events_of, only_session, responder, run_improver_on_scripted_lm, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.lm.service import PromptTooLong
from stop_tui.engine.session import new_session, session_settings
from stop_tui.engine.store import SessionStore

pytestmark = pytest.mark.timeout(300)


def run(server, sessions_dir, model: str, *extra: str):
    return stop_tui("run", "--task", "lpn", "--model", model, "--base-url", server.base_url,
                    "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir),
                    *extra)


@pytest.mark.parametrize("listed, kwargs, asked", [
    (["qwen2.5-coder:latest"], {"ollama_names": True}, "qwen2.5-coder"),  # Ollama
    (["/models/smollm2.gguf"], {"any_model": True}, "anything-at-all"),  # llama.cpp's server
])
def test_a_model_the_server_serves_is_used_whatever_models_lists(sessions_dir, listed, kwargs, asked):
    with ScriptedLMServer(responder, models=listed, **kwargs) as server:
        proc = run(server, sessions_dir, asked, "--json")
        bodies = list(server.requests)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["iterations_completed"] == 1
    assert bodies and {b["model"] for b in bodies} == {asked}


def test_a_model_the_server_does_not_have_pauses_with_what_it_offers(sessions_dir):
    with ScriptedLMServer(responder, models=["served-a", "served-b"]) as server:
        proc = run(server, sessions_dir, "other")
        sent = len(server.requests)
    assert proc.returncode == 3, proc.stderr
    paused = [line for line in proc.stderr.splitlines() if line.startswith("paused: ")]
    assert len(paused) == 1, proc.stderr
    assert "no model 'other'" in paused[0] and "served-a, served-b" in paused[0]
    assert server.base_url in paused[0] and "--model" in paused[0]
    assert sent == 1  # a 404 is not retried
    events = events_of(sessions_dir, only_session(sessions_dir))
    assert not [e for e in events if e.kind in (ev.CANDIDATE_SCORED, ev.ITERATION_ACCEPTED,
                                                ev.ITERATION_REJECTED, ev.SESSION_FINISHED)]


def test_a_reasoning_model_gets_its_default_temperature_and_bills_reasoning(sessions_dir):
    with ScriptedLMServer(responder, model="o4-mini", reasoning=40, reject_max_tokens=True) as server:
        proc = run(server, sessions_dir, "o4-mini", "--json")
        bodies = list(server.requests)
        billed = (server.prompt_tokens, server.completion_tokens, server.reasoning_tokens)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        session = summary["session"]
        # A resume on the same server knows it already: no request carries a temperature.
        more = stop_tui("run", "--resume", session, "--iterations", "2",
                        "--sessions-dir", str(sessions_dir), "--json")
        again = server.requests[len(bodies):]
    assert more.returncode == 0, more.stderr
    assert again and not any("temperature" in b for b in again)
    # Adapted once each (max_completion_tokens, then no temperature), then kept.
    assert ["temperature" in b for b in bodies[:3]] == [True, True, False]
    assert not any("temperature" in b for b in bodies[2:]) and len(bodies) > 3
    lm = summary["lm"]
    assert lm["retries"] == 2 and lm["failed"] == 0
    assert (lm["prompt_tokens"], lm["completion_tokens"], lm["reasoning_tokens"]) == billed
    assert billed[2] == 40 * lm["completions"]
    store = SessionStore.open(sessions_dir, session)
    assert store.meta()["lm_fixed_temperature"] is True
    store.close()
    shown = stop_tui("show", session, "--sessions-dir", str(sessions_dir))
    assert shown.returncode == 0, shown.stderr
    assert "the paper's temperatures are not honoured by this model" in shown.stdout
    assert " reasoning)" in shown.stdout


HUGE_PROMPT = r'''
def improve_algorithm(initial_solution, utility, language_model):
    try:
        language_model.prompt("expert", "x" * 20_000_000)
        return "sent"
    except Exception as exc:
        return "refused: " + str(exc)
'''


def test_a_20_mb_prompt_is_refused_before_it_is_sent(sessions_dir):
    ran = run_improver_on_scripted_lm(sessions_dir, HUGE_PROMPT, budget=2)
    out, usage = ran.out, ran.usage
    assert out.error is None, out.error
    assert out.value.startswith("refused: prompt too long"), out.value
    assert "--max-prompt-tokens" in out.value and "32,768" in out.value
    assert ran.requests == []  # nothing reached the server
    assert ran.lm.uses == 1 and usage.calls == 1 and usage.failed == 1 and usage.requests == 0
    events = events_of(sessions_dir, ran.session)
    request = [e for e in events if e.kind == ev.LM_REQUEST]
    reply = [e for e in events if e.kind == ev.LM_REPLY]
    assert len(request) == len(reply) == 1
    assert reply[0].data["refused"] is True and "prompt too long" in reply[0].data["error"]
    assert reply[0].data["failed"] == 1 and reply[0].data["requests"] == 0
    # The record keeps the head of the prompt, not 20 MB.
    store = SessionStore.open(sessions_dir, ran.session)
    kept = store.text(request[0].data["prompts"][0])
    store.close()
    assert len(kept) < 5000 and "20,000,000 characters in all, not sent" in kept


def test_the_model_context_and_the_setting_bound_prompts(sessions_dir):
    with ScriptedLMServer(responder) as server:
        backend = OpenAIBackend("scripted", server.base_url)
        backend.context_tokens = 100  # as the local backend reports its n_ctx
        session = new_session(sessions_dir, "lpn", session_settings("quick"), backend)
        lm = session.engine.lm.handle("probe", 3, 2)
        with pytest.raises(PromptTooLong, match="the model's context of 100 tokens"):
            lm.prompt("system", "y" * 400)
        assert lm.prompt("system", "short")[0]
        session.close()
        assert len(server.requests) == 1
    settings = session_settings("quick", max_prompt_tokens=50)
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", settings, OpenAIBackend("scripted", server.base_url))
        lm = session.engine.lm.handle("probe", 2, 2)
        with pytest.raises(PromptTooLong, match=r"over the limit of 50 \(--max-prompt-tokens\)"):
            lm.prompt("system", "z" * 200)
        session.close()
        assert not server.requests


@pytest.mark.parametrize("option, value", [("--max-prompt-tokens", "0"), ("--lm-timeout", "0"),
                                           ("--lm-timeout", "nan"), ("--lm-timeout", "-3")])
def test_bad_lm_options_are_refused(sessions_dir, option, value):
    proc = stop_tui("run", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", option, value,
                    "--sessions-dir", str(sessions_dir))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("stop-tui: error: ") and option in proc.stderr
    assert not list(sessions_dir.iterdir())

"""Replay: a recorded session re-run with no network (`unshare -n`), every LM request answered
from the record; every effective event compares equal with the original's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lm_helpers import ROOT, cli_env, events_of, responder, run_args, same_events, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev

THREADED = '''
import threading
from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Asks the LM from two threads at once: the call numbers race, the contents do not."""
    replies = {}

    def ask(tag):
        replies[tag] = language_model.batch_prompt("You are an expert.", [f"{tag}: improve\\n{initial_solution}"] * 2)

    threads = [threading.Thread(target=ask, args=(tag,)) for tag in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    candidates = [c for c in extract_code(replies["alpha"] + replies["beta"]) if c]
    return max(candidates, key=utility) if candidates else initial_solution
'''


def no_network(*args: str) -> subprocess.CompletedProcess:
    """`stop-tui ARGS` in a network namespace of its own: nothing can be sent anywhere."""
    return subprocess.run(["unshare", "-n", sys.executable, "-m", "stop_tui", *args],
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)


needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0,
    reason="needs `unshare -n` (a network namespace)")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("recorded")
    with ScriptedLMServer(responder, honour_n=False, latency=0.05) as server:
        proc = stop_tui(*run_args(server, folder, "--json"))
    assert proc.returncode == 0, proc.stderr
    return folder, json.loads(proc.stdout)


@needs_unshare
def test_replay_offline_reproduces_every_event(recorded):
    folder, original = recorded
    proc = no_network("replay", original["session"], "--sessions-dir", str(folder), "--check", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "0 difference(s)" in proc.stderr
    replay = json.loads(proc.stdout)
    assert replay["replay_of"] == original["session"]
    assert set(replay) == set(original)  # the same keys as run --json
    assert replay["meta_utility"] == original["meta_utility"]
    assert replay["seed_meta_utility"] == original["seed_meta_utility"]
    assert replay["lm"]["replayed_calls"] == replay["lm"]["calls"] == original["lm"]["calls"]
    assert replay["lm"]["failed"] == 0
    only_original, only_replay = same_events(folder, original["session"], folder, replay["session"])
    assert only_original == only_replay == []


@needs_unshare
def test_run_with_a_replay_model_rescores_under_another_rule(recorded):
    folder, original = recorded
    proc = no_network("run", "--model", f"replay:{original['session']}", "--acceptance", "best",
                      "--sessions-dir", str(folder), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rerun = json.loads(proc.stdout)
    assert rerun["task"] == "lpn" and rerun["preset"] == "quick"
    assert rerun["seed_meta_utility"] == original["seed_meta_utility"]
    # Under "best" an equal score is not an improvement: the iteration is rejected.
    assert rerun["iterations"][1]["accepted"] is False
    assert "not better" in rerun["iterations"][1]["reason"]
    assert rerun["lm"]["failed"] == 0 and rerun["lm"]["replayed_calls"] == rerun["lm"]["calls"]


def test_replay_matches_calls_made_from_several_threads(tmp_path):
    """An improver asking from two threads: the replay finds each answer by content and
    occurrence whatever order the calls are numbered in."""
    from stop_tui.engine.lm.openai_backend import OpenAIBackend
    from stop_tui.engine.lm.replay_backend import ReplayBackend
    from stop_tui.engine.session import new_session, session_settings

    settings = session_settings("quick")
    with ScriptedLMServer(responder, honour_n=False) as server:
        session = new_session(tmp_path, "lpn", settings, OpenAIBackend("scripted", server.base_url))
        first = session.engine.meta_score(THREADED, "probe", with_test=False)
        session.close()
        sent = len(server.requests)
    assert sent == 4 and not first.errors
    source = events_of(tmp_path, session.id)
    replayed = new_session(tmp_path, "lpn", settings, ReplayBackend(session.id, tmp_path))
    again = replayed.engine.meta_score(THREADED, "probe", with_test=False)
    replayed.close()
    assert again.val == first.val
    replies = [e for e in events_of(tmp_path, replayed.id) if e.kind == ev.LM_REPLY]
    assert len(replies) == 2 and all(r.data.get("replayed") and r.data["failed"] == 0 for r in replies)
    # Each answer is matched to its content (alpha's replies to alpha's call), whatever lmN it got.
    def by_prompt(events):
        requests = {e.path: e.data["prompts"][0] for e in events if e.kind == ev.LM_REQUEST}
        return sorted((requests[e.path], tuple(e.data["replies"])) for e in events if e.kind == ev.LM_REPLY)
    assert by_prompt(replies_and_requests(tmp_path, replayed.id)) == by_prompt(source)


def replies_and_requests(folder: Path, session: str):
    return [e for e in events_of(folder, session) if e.kind in (ev.LM_REQUEST, ev.LM_REPLY)]


def test_request_missing_from_the_record_fails_without_network(tmp_path, recorded):
    """A request the record does not hold is a failed completion naming the session."""
    from stop_tui.engine.lm.replay_backend import ReplayBackend
    from stop_tui.engine.session import new_session, session_settings

    folder, original = recorded
    backend = ReplayBackend(original["session"], folder)
    session = new_session(tmp_path, "lpn", session_settings("quick"), backend)
    lm = session.engine.lm.handle("elsewhere", 2, 2)
    replies = lm.batch_prompt("system", ["a prompt nobody recorded"])
    session.close()
    assert replies == [""]
    reply = [e for e in events_of(tmp_path, session.id) if e.kind == ev.LM_REPLY][0]
    assert reply.data["failed"] == 1 and original["session"] in reply.data["error"]


@pytest.mark.slow
def test_replay_of_a_run_through_faults(tmp_path):
    """Recorded through 429s and dropped connections: the replay has no faults to retry and
    still compares equal (retries are transport history; the attempt counts are recorded)."""
    with ScriptedLMServer(responder, honour_n=False, fail_rate=0.3, drop_rate=0.1, fail_seed=11) as server:
        proc = stop_tui(*run_args(server, tmp_path, "--json"))
        faults = server.failed + server.faults["drop"]
    assert proc.returncode == 0, proc.stderr
    original = json.loads(proc.stdout)
    assert faults > 0 and original["lm"]["retries"] == faults
    replay = stop_tui("replay", original["session"], "--sessions-dir", str(tmp_path), "--check", "--json")
    assert replay.returncode == 0, replay.stderr
    again = json.loads(replay.stdout)
    assert again["lm"] == {**original["lm"], "replayed_calls": original["lm"]["calls"],
                           "max_concurrency_reached": 0}
    assert again["meta_utility"] == original["meta_utility"]

"""A server that fails is not a score (issue 15, items 1 and 6).

Servers that answer HTML, JSON cut short, a JSON object that is no completion, `[1,2,3]`,
constant 500s, or never answer at all: the run pauses like at a cap (exit 3, one line that says
what the server did and how to resume), nothing is scored from it, and `run --resume ID
--base-url URL --model M` continues on a working server (the change is recorded) and scores
exactly like a run that never met the broken one. Opening or viewing a session contacts no
server."""

from __future__ import annotations

import json

import pytest
from lm_helpers import events_of, only_session, responder, run_args, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.lm.retry import RetryPolicy
from stop_tui.engine.lm.service import FAILURE_STREAK, ServerFailing
from stop_tui.engine.session import new_session, open_session, session_settings
from stop_tui.engine.store import SessionStore

pytestmark = pytest.mark.timeout(300)

SCORED = (ev.CANDIDATE_SCORED, ev.RUN_FINISHED, ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED,
          ev.SESSION_FINISHED)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A clean run's summary: what a run on a working server scores."""
    folder = tmp_path_factory.mktemp("reference")
    with ScriptedLMServer(responder) as server:
        proc = stop_tui(*run_args(server, folder, "--json"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def paused_line(proc) -> str:
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("paused: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def assert_nothing_scored(sessions_dir, session: str) -> None:
    events = events_of(sessions_dir, session)
    assert not [e.kind for e in events if e.kind in SCORED]
    assert events[-1].kind == ev.PAUSED and events[-1].data.get("lm_failed") is True


@pytest.mark.parametrize("broken, said", [
    ("html", "malformed reply"), ("garbage", "malformed reply"), ("shape", "malformed reply"),
    ("list", "malformed reply"), ("500", "500"),
])
@pytest.mark.slow
def test_a_broken_server_pauses_the_run_and_scores_nothing(sessions_dir, broken, said):
    with ScriptedLMServer(responder, broken=broken) as server:
        proc = stop_tui(*run_args(server, sessions_dir))
    line = paused_line(proc)
    session = only_session(sessions_dir)
    assert f"the LM server at {server.base_url}" in line and said in line
    assert "nothing was scored from it" in line
    assert f"stop-tui run --resume {session}" in line and "--base-url" in line
    assert "meta-utility [-]" in proc.stdout  # no iteration scored
    assert_nothing_scored(sessions_dir, session)


@pytest.mark.slow
def test_resume_on_a_working_server_after_html(sessions_dir, reference):
    with ScriptedLMServer(responder, broken="html") as bad:
        paused_line(stop_tui(*run_args(bad, sessions_dir)))
    session = only_session(sessions_dir)
    with ScriptedLMServer(responder) as good:
        done = stop_tui("run", "--resume", session, "--base-url", good.base_url,
                        "--sessions-dir", str(sessions_dir), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "finished"
    assert summary["meta_utility"] == reference["meta_utility"]
    assert summary["seed_meta_utility"] == reference["seed_meta_utility"]
    assert summary["base_url"] == good.base_url
    changes = [e for e in events_of(sessions_dir, session) if e.kind == ev.LM_CHANGED]
    assert len(changes) == 1
    assert changes[0].data["from"]["base_url"] == bad.base_url
    assert changes[0].data["to"]["base_url"] == good.base_url


def test_a_hanging_server_times_out_pauses_and_resume_honours_base_url_and_model(sessions_dir, reference):
    with ScriptedLMServer(responder, broken="hang") as hanging:
        proc = stop_tui("run", "--task", "lpn", "--model", "dead-model", "--base-url", hanging.base_url,
                        "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir),
                        "--lm-timeout", "0.5")
        attempts = len(hanging.requests)
    line = paused_line(proc)
    assert "no answer within 0.5 s (--lm-timeout)" in line, line
    assert attempts == 1  # a server that never answered is not asked again and again
    session = only_session(sessions_dir)
    assert_nothing_scored(sessions_dir, session)
    store = SessionStore.open(sessions_dir, session)
    assert store.meta()["settings"]["lm_timeout"] == 0.5  # --lm-timeout is kept for resumes
    store.close()
    with ScriptedLMServer(responder) as good:
        done = stop_tui("run", "--resume", session, "--base-url", good.base_url, "--model", "scripted",
                        "--sessions-dir", str(sessions_dir), "--json")
        models = {b["model"] for b in good.requests}
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["meta_utility"] == reference["meta_utility"]
    assert summary["model"] == "scripted" and models == {"scripted"}
    change = [e for e in events_of(sessions_dir, session) if e.kind == ev.LM_CHANGED][0]
    assert change.data["from"] == {"model": "dead-model", "base_url": hanging.base_url, "replay_of": None}
    assert change.data["to"] == {"model": "scripted", "base_url": good.base_url, "replay_of": None}


def test_a_server_breaking_mid_iteration_pauses_and_the_resume_scores_as_if_it_never_had(
        sessions_dir, reference):
    """It answers the seed's call and the iteration's own, then sends HTML: the candidates' runs
    fail three calls in a row, the run pauses (nothing of the iteration is kept), and the resume
    re-runs it: recorded answers reused, the failed calls asked again."""
    with ScriptedLMServer(responder, broken="html", broken_after=2) as flaky:
        line = paused_line(stop_tui(*run_args(flaky, sessions_dir)))
    assert "failed 3 calls in a row: malformed reply" in line, line
    session = only_session(sessions_dir)
    decided = [e for e in events_of(sessions_dir, session)
               if e.kind in (ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED) and e.path == "it1"]
    assert not decided
    with ScriptedLMServer(responder) as good:
        done = stop_tui("run", "--resume", session, "--base-url", good.base_url,
                        "--sessions-dir", str(sessions_dir), "--json")
        asked = len(good.requests)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["meta_utility"] == reference["meta_utility"]
    assert asked == reference["lm"]["requests"] - 2  # the two answered calls came from the record


def test_an_unreachable_server_pauses_at_once(sessions_dir):
    proc = stop_tui("run", "--model", "some-model", "--base-url", "http://127.0.0.1:9/v1",
                    "--preset", "quick", "--sessions-dir", str(sessions_dir))
    line = paused_line(proc)
    assert "http://127.0.0.1:9/v1" in line and "--base-url" in line
    assert_nothing_scored(sessions_dir, only_session(sessions_dir))


def test_a_server_that_worked_pauses_after_failures_in_a_row(sessions_dir):
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        service = session.engine.lm
        service.policy = RetryPolicy(attempts=2, base=0.01)
        lm = service.handle("probe", 10, 2)
        assert lm.prompt("system", "works")[0]
        server.broken = "500"
        for _ in range(FAILURE_STREAK - 1):
            assert lm.prompt("system", "fails") == [""]  # a failed completion, the run goes on
        with pytest.raises(ServerFailing, match=f"failed {FAILURE_STREAK} calls in a row"):
            lm.prompt("system", "fails")
        assert session.gate.cancel_event.is_set()  # everything else stops too
        session.close()


def test_opening_and_viewing_contact_no_server(sessions_dir, monkeypatch):
    with ScriptedLMServer(responder) as server:
        proc = stop_tui(*run_args(server, sessions_dir))
        assert proc.returncode == 0, proc.stderr
        session = only_session(sessions_dir)
        seen = (len(server.requests), server.gets)
        opened = open_session(sessions_dir, session)
        opened.close()
        shown = stop_tui("show", session, "--sessions-dir", str(sessions_dir))
        assert shown.returncode == 0, shown.stderr
        assert (len(server.requests), server.gets) == seen
    # The server is gone, and the session was recorded against OpenAI with no key set.
    store = SessionStore.open(sessions_dir, session)
    store.set_meta({"base_url": None, "model": "gpt-4o-mini"})
    store.close()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    opened = open_session(sessions_dir, session)
    assert opened.engine.lm.backend.model == "gpt-4o-mini"
    opened.close()


def test_the_pause_line_carries_the_backends_failure_hint(sessions_dir):
    with ScriptedLMServer(responder, broken="list") as server:
        backend = OpenAIBackend("scripted", server.base_url)
        backend.failure_hint = "try --model local:OTHER.gguf"  # as a backend may advise
        session = new_session(sessions_dir, "lpn", session_settings("quick"), backend)
        outcome = session.engine.run(1)
        session.close()
    assert outcome == "capped"
    paused = events_of(sessions_dir, session.id)[-1]
    assert paused.kind == ev.PAUSED and paused.data["lm_failed"] is True
    assert "try --model local:OTHER.gguf." in paused.data["reason"]
    assert paused.data["reason"].index("try --model") < paused.data["reason"].index("resume:")

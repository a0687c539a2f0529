"""Exact resume after `kill -9`: a real `stop-tui run` subprocess against a scripted loopback
server is killed at several points (mid-call, mid-evaluation, mid-write, twice in a row),
resumed with `stop-tui run --resume`, and the finished session is compared with an
uninterrupted run of the same seed, event for event (kinds, paths, data; not timestamps or
timings). On the server side, no request whose answer had been recorded is sent again."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from lm_helpers import (
    events_of,
    kill9,
    kinds_in_log,
    only_session,
    recorded_seeds,
    request_fingerprint,
    responder,
    run_args,
    same_events,
    start,
    stop_tui,
    wait_for,
)
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.resume import effective

LATENCY = 0.25


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str, int]:
    """One uninterrupted quick iteration: (sessions dir, session id, server requests)."""
    folder = tmp_path_factory.mktemp("reference")
    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        proc = stop_tui(*run_args(server, folder, "--json"))
        assert proc.returncode == 0, proc.stderr
        return folder, json.loads(proc.stdout)["session"], len(server.requests)


def kill_and_resume(folder: Path, server: ScriptedLMServer, when, *, kills: int = 1) -> dict:
    proc = start(*run_args(server, folder, "--json"))
    assert wait_for(lambda: when(server, folder) or proc.poll() is not None), "never reached the kill point"
    assert proc.poll() is None, "the run ended before the kill point"
    kill9(proc)
    session = only_session(folder)
    answered_before = recorded_seeds(events_of(folder, session))
    sent_before = len(server.requests)
    for _ in range(kills - 1):  # kill the resumed run too, a little later
        again = start("run", "--resume", session, "--sessions-dir", str(folder), "--json")
        target = len(server.requests) + 2
        wait_for(lambda t=target, p=again: len(server.requests) >= t or p.poll() is not None)
        kill9(again)
        answered_before |= recorded_seeds(events_of(folder, session))
        sent_before = len(server.requests)
    done = stop_tui("run", "--resume", session, "--sessions-dir", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    resent = [b for b in server.requests[sent_before:] if b.get("seed") in answered_before]
    assert not resent, f"{len(resent)} answered request(s) sent again"
    return json.loads(done.stdout)


def assert_identical(reference, folder: Path, summary: dict) -> None:
    ref_dir, ref_id, _ = reference
    only_ref, only_ours = same_events(ref_dir, ref_id, folder, summary["session"])
    assert not only_ref and not only_ours, (only_ref[:3], only_ours[:3])
    ref = stop_tui("show", ref_id, "--sessions-dir", str(ref_dir), "--json")
    theirs = json.loads(ref.stdout)
    for key in ("meta_utility", "meta_utility_test", "seed_meta_utility", "iterations",
                "candidates_scored", "state"):
        assert summary[key] == theirs[key], key
    for key in ("calls", "requests", "completions", "prompt_tokens", "completion_tokens"):
        assert summary["lm"][key] == theirs["lm"][key], key


@pytest.mark.slow
def test_kill_mid_call(reference, tmp_path):
    """Killed while requests are in flight at the server (their replies not recorded yet)."""
    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        summary = kill_and_resume(tmp_path, server, lambda s, f: s.inflight > 0 and len(s.requests) >= 5)
        total = len(server.requests)
    assert_identical(reference, tmp_path, summary)
    # Only requests that were in flight at the kill were sent again.
    assert total - reference[2] <= 2
    assert summary["resumes"] == 1


SLOW_CALL = 0.02  # seconds a downstream program takes per instance: 0.4 s per val evaluation


def slow_responder(body: dict, i: int) -> str:
    """`responder`'s replies, with downstream programs that take SLOW_CALL per instance."""
    reply = responder(body, i)
    if "def improve_algorithm" in body["messages"][-1]["content"]:
        return reply
    return reply.replace("    return np.zeros", f"    import time\n    time.sleep({SLOW_CALL})\n    return np.zeros")


def test_kill_mid_evaluation(tmp_path):
    """Killed while an improver's candidate solutions are being scored in the sandbox: the
    first candidate improver's run has its LM reply and is scoring what it got (slow programs,
    so that the kill lands there)."""
    def scoring(server, folder):
        in_c1 = kinds_in_log(folder, "it1/c1/")
        return in_c1[ev.LM_REPLY] >= 1 and server.inflight == 0 and not in_c1[ev.RUN_FINISHED]

    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    with ScriptedLMServer(slow_responder, honour_n=False, latency=LATENCY) as server:
        proc = stop_tui(*run_args(server, tmp_path / "reference", "--json"))
        assert proc.returncode == 0, proc.stderr
        reference = tmp_path / "reference", json.loads(proc.stdout)["session"], len(server.requests)
    with ScriptedLMServer(slow_responder, honour_n=False, latency=LATENCY) as server:
        summary = kill_and_resume(tmp_path / "killed", server, scoring)
        total = len(server.requests)
    assert_identical(reference, tmp_path / "killed", summary)
    assert total == reference[2]  # nothing was in flight: not one request more
    events = events_of(tmp_path / "killed", summary["session"])
    resumed = [e for e in events if e.kind == ev.RESUMED]
    assert resumed[0].data["iteration"] == 1 and resumed[0].data["recorded_calls"] >= 2
    # The partial iteration's events are still in the log, superseded.
    assert len(effective(events)) < len(events)


@pytest.mark.slow
def test_kill_mid_write_then_kill_the_resume(reference, tmp_path):
    """Killed in a burst of writes right after the first answers, then killed again while
    resuming; the second resume still finishes identical."""
    def first_answers(server, folder):
        return kinds_in_log(folder)[ev.LM_PART] >= 1

    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        summary = kill_and_resume(tmp_path, server, first_answers, kills=2)
        fingerprints = Counter(request_fingerprint(b) for b in server.requests)
    assert_identical(reference, tmp_path, summary)
    assert summary["resumes"] == 2
    # The twice-resumed session replays offline, event for event (its record spans segments).
    replay = stop_tui("replay", summary["session"], "--sessions-dir", str(tmp_path), "--check", "--quiet")
    assert replay.returncode == 0 and "0 difference(s)" in replay.stderr, replay.stderr
    assert sum(c - 1 for c in fingerprints.values()) <= 4  # at most the in-flight ones, twice


@pytest.mark.slow
def test_kill_with_concurrent_runs_in_the_paper_preset(tmp_path):
    """The paper preset's iteration 0: 5 improver runs at once, 6 samples each, 8 requests in
    flight. Killed mid-way; the resumed session has the same events (running BUDGET totals
    aside: concurrent calls finish in any order, so only the final totals are compared)."""
    def paper(server, folder, *extra):
        args = run_args(server, folder, *extra)
        args[args.index("quick")] = "paper"
        args[args.index("--iterations") + 1] = "0"
        return args

    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref_dir.mkdir()
    run_dir.mkdir()
    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        done = stop_tui(*paper(server, ref_dir, "--json"))
        assert done.returncode == 0, done.stderr
        reference = json.loads(done.stdout)
    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        proc = start(*paper(server, run_dir, "--json"))
        assert wait_for(lambda: len(server.requests) >= 14 or proc.poll() is not None)
        kill9(proc)
        session = only_session(run_dir)
        answered = recorded_seeds(events_of(run_dir, session))
        sent_before = len(server.requests)
        resumed = stop_tui("run", "--resume", session, "--sessions-dir", str(run_dir), "--json")
        again = [b for b in server.requests[sent_before:] if b.get("seed") in answered]
    assert resumed.returncode == 0, resumed.stderr
    assert not again
    summary = json.loads(resumed.stdout)
    assert summary["seed_meta_utility"] == reference["seed_meta_utility"]
    failures = [e.data.get("error") for folder, sid in ((ref_dir, reference["session"]), (run_dir, session))
                for e in events_of(folder, sid) if e.kind == ev.RUN_FINISHED and e.data.get("error")]
    assert summary["lm"]["calls"] == reference["lm"]["calls"] == 5, failures
    only_ref, only_ours = same_events(ref_dir, reference["session"], run_dir, session, budgets="final")
    assert only_ref == only_ours == []


def _sessions(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if (p / "session.db").exists()]


@pytest.mark.slow
def test_killed_at_random_moments_again_and_again(reference, tmp_path):
    """Five kills at random moments (seeded), each resume picking up from the last; then one
    resume to the end: still identical, and no recorded answer was ever asked for again.
    A kill can land before the run has made its session (on a loaded machine, the first one
    often does): the run is started again, and the next kill waits until it has made one; that
    kill does not count among the five."""
    import random

    rng = random.Random(20261125)
    with ScriptedLMServer(responder, honour_n=False, latency=LATENCY) as server:
        proc = start(*run_args(server, tmp_path, "--json"))
        resumes = 0
        while resumes < 5:
            time.sleep(rng.uniform(0.3, 2.5))
            if proc.poll() is not None:
                break
            kill9(proc)
            if not _sessions(tmp_path):  # killed before it made one: nothing to resume
                assert not server.requests, "requests sent for a session that does not exist"
                proc = start(*run_args(server, tmp_path, "--json"))
                assert wait_for(lambda p=proc: _sessions(tmp_path) or p.poll() is not None)
                continue
            session = only_session(tmp_path)
            answered = recorded_seeds(events_of(tmp_path, session))
            sent = len(server.requests)
            proc = start("run", "--resume", session, "--sessions-dir", str(tmp_path), "--json")
            resumes += 1
            time.sleep(0.5)
            assert not [b for b in server.requests[sent:] if b.get("seed") in answered]
        kill9(proc)
        assert _sessions(tmp_path), f"the run ended without a session: {proc.stderr.read()[-500:]}"
        session = only_session(tmp_path)
        answered, sent = recorded_seeds(events_of(tmp_path, session)), len(server.requests)
        done = stop_tui("run", "--resume", session, "--sessions-dir", str(tmp_path), "--json")
        assert not [b for b in server.requests[sent:] if b.get("seed") in answered]
    assert done.returncode == 0, done.stderr
    assert_identical(reference, tmp_path, json.loads(done.stdout))


@pytest.mark.slow
def test_ctrl_c_records_the_calls_in_flight(reference, tmp_path):
    """ctrl+c while requests are in flight: the run waits for their answers, records them,
    says it stopped; the resume sends nothing that was answered."""
    import signal

    with ScriptedLMServer(responder, honour_n=False, latency=1.0) as server:
        proc = start(*run_args(server, tmp_path, "--json"))
        assert wait_for(lambda: server.inflight > 0 and len(server.requests) >= 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "recording the LM calls in flight" in err
        session = only_session(tmp_path)
        events = events_of(tmp_path, session)
        assert sum(e.kind == ev.LM_REQUEST for e in events) == sum(e.kind == ev.LM_REPLY for e in events)
        assert "ctrl+c" in [e for e in events if e.kind == ev.PAUSED][-1].data["reason"]
        done = stop_tui("run", "--resume", session, "--sessions-dir", str(tmp_path), "--json")
        total = len(server.requests)
    assert done.returncode == 0, done.stderr
    assert total == reference[2]  # not one request more than an uninterrupted run
    assert_identical(reference, tmp_path, json.loads(done.stdout))

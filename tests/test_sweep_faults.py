"""`stop-tui sweep` survives what kills its processes, on a real local Ray instance against the
scripted LM server (with latency, so that there is a mid-run to kill in):

- a Ray worker SIGKILLed mid-run: Ray retries the task, the session resumes from its log, the
  final sessions equal the same runs done alone, no request already answered is sent again (the
  server saw no more requests than the runs alone plus those in flight at the kill), and no
  process the worker started (the sandbox) is left;
- the driver SIGKILLed mid-sweep, then `sweep --resume`: the same end state, and the run that
  had finished is not touched;
- ctrl+c: the runs record their calls in flight and pause; the resume sends nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from lm_helpers import (
    events_of,
    kill9,
    recorded_seeds,
    responder,
    same_events,
    session_files,
    start,
    stop_tui,
    wait_for,
)
from proc_helpers import descendants, describe, wait_gone
from ray_helpers import local_ray
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.lock import holder
from stop_tui.engine.sweep.driver import endpoint_resource
from stop_tui.engine.sweep.layout import RunKey
from stop_tui.engine.sweep.runner import recorded_state

pytestmark = pytest.mark.slow  # Ray instances, kills and resumes: a minute or two here

LATENCY = 0.3
RUN = ("--task", "lpn", "--preset", "quick", "--iterations", "1")
ALONE = (RunKey("lpn", "a", 0), RunKey("lpn", "b", 0), RunKey("lpn", "a", 1), RunKey("lpn", "a", 2))


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each run done alone with `stop-tui run`: key -> (sessions dir, id, requests it sent)."""
    out = {}
    with ScriptedLMServer(responder, models=["a", "b"], latency=LATENCY) as alone:
        for key in ALONE:
            folder = tmp_path_factory.mktemp(key.name)
            sent = len(alone.requests)
            done = stop_tui("run", *RUN, "--model", key.model, "--seed", str(key.seed),
                            "--base-url", alone.base_url, "--sessions-dir", str(folder), "--json")
            assert done.returncode == 0, done.stderr
            out[key] = (folder, json.loads(done.stdout)["session"], len(alone.requests) - sent)
    return out


def replies(folder: Path) -> int:
    """LM replies committed so far in a running session's log (read-only, WAL-safe)."""
    try:
        con = sqlite3.connect(f"file:{folder / 'session.db'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (ev.LM_REPLY,)).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def assert_like_alone(references, sweep_dir: Path, key: RunKey) -> None:
    ref_dir, ref_id, _ = references[key]
    only_alone, only_swept = same_events(ref_dir, ref_id, sweep_dir, key.name, budgets="final")
    assert not only_alone and not only_swept, (key.name, only_alone[:2], only_swept[:2])


def test_the_driver_killed_then_sweep_resume(references, tmp_path):
    """The driver (with its own local Ray instance) is SIGKILLed while the second of three runs
    is mid-call; `sweep --resume` finishes the sweep, and leaves the finished run as it was."""
    with ScriptedLMServer(responder, models=["a"], latency=LATENCY) as server:
        sessions = tmp_path / "sessions"
        proc = start("sweep", *RUN, "--model", "a", "--seeds", "0-2", "--max-parallel", "1", "--base-url",
                     server.base_url, "--sessions-dir", str(sessions), "--name", "d", "--quiet")
        sweep_dir = sessions / "d"
        first, second = sweep_dir / "lpn-a-s0", sweep_dir / "lpn-a-s1"
        try:
            assert wait_for(lambda: (recorded_state(first) == "finished" and replies(second) >= 1
                                     and server.inflight > 0) or proc.poll() is not None, timeout=180)
            assert proc.poll() is None, proc.communicate()
            os.kill(proc.pid, signal.SIGKILL)  # the driver only: what Ray does with the rest is Ray's
            proc.wait(timeout=30)
            finished = session_files(first)
            assert recorded_state(sweep_dir / "lpn-a-s2") is None  # never started
            done = stop_tui("sweep", "--resume", "d", "--sessions-dir", str(sessions), "--json")
        finally:
            kill9(proc)  # whatever of the first driver's group is left
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [r["state"] for r in summary["runs"]] == ["finished"] * 3
    assert session_files(first) == finished
    for seed in (0, 1, 2):
        assert_like_alone(references, sweep_dir, RunKey("lpn", "a", seed))
    resumed = [e for e in events_of(sweep_dir, second.name) if e.kind == ev.RESUMED]
    assert resumed, "the interrupted run was started again instead of resumed"


def test_ctrl_c_records_the_calls_in_flight_and_resume_sends_nothing_twice(references, tmp_path):
    """ctrl+c at a terminal (SIGINT to the driver's process group, its Ray instance included):
    each run lets its LM calls in flight be recorded and pauses, as `stop-tui run` does; exit
    130; `sweep --resume` then sends exactly the requests the runs alone sent, none twice."""
    keys = (RunKey("lpn", "a", 0), RunKey("lpn", "a", 1))
    with ScriptedLMServer(responder, models=["a"], latency=LATENCY) as server:
        sessions = tmp_path / "sessions"
        proc = start("sweep", *RUN, "--model", "a", "--seeds", "0-1", "--base-url", server.base_url,
                     "--sessions-dir", str(sessions), "--name", "c", "--quiet")
        sweep_dir = sessions / "c"
        try:
            assert wait_for(lambda: (server.inflight > 0 and all(replies(sweep_dir / k.name) >= 1 for k in keys))
                            or proc.poll() is not None, timeout=180)
            assert proc.poll() is None, proc.communicate()
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            kill9(proc)
        assert proc.returncode == 130, err
        assert "continue with: stop-tui sweep --resume c" in err
        for key in keys:
            paused = [e for e in events_of(sweep_dir, key.name) if e.kind == ev.PAUSED]
            assert paused and "stopped by the user" in paused[-1].payload.reason
        done = stop_tui("sweep", "--resume", "c", "--sessions-dir", str(sessions), "--json")
        assert done.returncode == 0, done.stderr
    assert len(server.requests) == sum(references[k][2] for k in keys)
    for key in keys:
        assert_like_alone(references, sweep_dir, key)


@pytest.fixture(scope="module")
def server():
    with ScriptedLMServer(responder, models=["a", "b"], latency=LATENCY) as s:
        yield s


@pytest.fixture(scope="module")
def ray_endpoint(server):
    with local_ray(resources={endpoint_resource("a", server.base_url): 8}) as instance:
        yield instance


def test_a_worker_killed_mid_run_is_retried_and_resumes(references, server, ray_endpoint, tmp_path):
    sessions = tmp_path / "sessions"
    proc = start("sweep", *RUN, "--model", "a,b", "--seeds", "0", "--base-url", server.base_url,
                 "--ray-address", ray_endpoint.address, "--sessions-dir", str(sessions), "--name", "k",
                 "--json", "--quiet")
    sweep_dir = sessions / "k"
    folder = sweep_dir / "lpn-a-s0"

    def mid_run() -> bool:
        who = holder(folder)
        return (who is not None and replies(folder) >= 2 and server.inflight > 0
                and bool(descendants(int(who["pid"]))))

    try:
        assert wait_for(lambda: mid_run() or proc.poll() is not None, timeout=180), "never mid-run"
        assert proc.poll() is None, proc.communicate()
        worker = int(holder(folder)["pid"])
        assert worker != proc.pid  # a Ray worker runs the session, not the driver
        tree = descendants(worker)  # the sandbox it started
        answered = recorded_seeds(events_of(sweep_dir, folder.name))
        sent_before, in_flight = len(server.requests), server.inflight
        os.kill(worker, signal.SIGKILL)
        left = wait_gone(tree, 3.0)
        assert not left, describe(left)
        out, err = proc.communicate(timeout=300)
    finally:
        kill9(proc)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert [r["state"] for r in summary["runs"]] == ["finished", "finished"]
    for key in (RunKey("lpn", "a", 0), RunKey("lpn", "b", 0)):
        assert_like_alone(references, sweep_dir, key)
    assert [e for e in events_of(sweep_dir, folder.name) if e.kind == ev.RESUMED], "not resumed"
    mine = [b for b in server.requests if b.get("model") == "a"]
    resent = [b for b in server.requests[sent_before:] if b.get("model") == "a" and b.get("seed") in answered]
    assert not resent, f"{len(resent)} answered request(s) sent again"
    assert len(mine) <= references[RunKey("lpn", "a", 0)][2] + in_flight

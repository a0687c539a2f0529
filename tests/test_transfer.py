"""`stop-tui transfer` end to end against a scripted OpenAI-compatible server on 127.0.0.1:
the table's numbers are the executed utilities of the programs the scripted LM hands out,
the session records every unit, and a killed run resumes without repeating recorded work."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import PROGRAMS, ROOT, stop_tui
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.scoring import score_solution
from stop_tui.engine.session import session_settings
from stop_tui.engine.store import SessionStore
from stop_tui.engine.tasks import load_task
from stop_tui.engine.transfer import lanes_at_once, resolve_improver

FIRST = PROGRAMS / "improver_first.py"  # asks once with its own system message, returns the first program
SEED_SYSTEM = "You are an expert computer science researcher"
SAT = {"time_limit": 5.0}  # correctness, not speed, in these tests

SEED_MARK = {  # a line of each task's seed solution, to tell which task a prompt is about
    "grid": "def algorithm(t: str, dist: int):",
    "mqa": "def algorithm(F, D, P):",
    "sat": "def algorithm(formula):",
    "maxcut": "def algorithm(adjacency_matrix):",
    "parity": "def algorithm(train_samples, train_parity, test_samples):",
}
WEAK = {  # what the seed improver (I0) is handed
    "grid": "def algorithm(t, dist):\n    return t\n",
    "mqa": (PROGRAMS / "mqa_identity.py").read_text(),
    "sat": "def algorithm(formula):\n    return [True] * 51\n",
    "maxcut": (PROGRAMS / "maxcut_same_side.py").read_text(),
    "parity": (PROGRAMS / "lpn_zeros.py").read_text(),
}
STRONG = {  # what the given improver (IT) is handed
    "grid": (PROGRAMS / "grid_exact.py").read_text(),
    "mqa": "def algorithm(F, D, P):\n    return list(range(len(F)))[::-1]\n",
    "sat": (PROGRAMS / "sat_walksat.py").read_text(),
    "maxcut": "def algorithm(adjacency_matrix):\n    return [k % 2 for k in range(len(adjacency_matrix))]\n",
    "parity": (PROGRAMS / "lpn_exact.py").read_text(),
}


def responder_for(gate: threading.Event | None = None):
    def responder(body, index):
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        task = next(name for name, mark in SEED_MARK.items() if mark in user)
        if system.startswith(SEED_SYSTEM):
            return f"An idea.\n```python\n{WEAK[task]}```\n"
        if gate is not None:
            gate.wait(60)
        return f"A better idea.\n```python\n{STRONG[task]}```\n"

    return responder


def expected(name: str, program: str) -> tuple[float, float]:
    task = load_task(name)
    settings = SAT if name == "sat" else None
    return (score_solution(task, program, "test", settings=settings).score,
            score_solution(task, program, "val", settings=settings).score)


def transfer(server, sessions_dir, *args):
    return stop_tui("transfer", "--model", "scripted", "--base-url", server.base_url, "--preset", "quick",
                    "--sessions-dir", str(sessions_dir), *args)


@pytest.mark.slow
def test_the_table_for_all_five_tasks(sessions_dir):
    with ScriptedLMServer(responder_for()) as server:
        proc = transfer(server, sessions_dir, "--improver", str(FIRST), "--tasks", "grid,mqa,sat,maxcut,parity",
                        "--set", "time_limit=5", "--json", "--quiet")
        assert proc.returncode == 0, proc.stderr
        # Per task: I0 one call (2 samples), IT one call (1 sample).
        assert len(server.requests) == 10
    result = json.loads(proc.stdout)
    assert result["split"] == "test" and result["runs"] == 1 and result["improver"] == str(FIRST)
    rows = {row["task"]: row for row in result["rows"]}
    assert list(rows) == ["grid", "mqa", "sat", "maxcut", "parity"]
    for name, row in rows.items():
        task = load_task(name)
        for who, program in (("seed_solution", task.seed), ("seed_improver", WEAK[name]), ("improver", STRONG[name])):
            test, val = expected(name, program)
            tol = 1e-3 if name == "mqa" else 1e-9  # mqa adds the run's seconds to its objective
            if name == "sat" and who == "seed_solution":
                continue  # the seed random walk: timing-dependent, checked below
            assert row[who]["test"] == pytest.approx(test, abs=tol), (name, who)
            assert row[who]["val"] == pytest.approx(val, abs=tol), (name, who)
            assert row[who]["n"] == 1 and row[who]["ci95"][0] <= row[who]["test"] <= row[who]["ci95"][1]
    assert rows["grid"]["seed_solution"]["test"] == pytest.approx(0.438874651123, abs=1e-12)
    assert rows["grid"]["improver"]["test"] == 1.0 and rows["parity"]["improver"]["test"] == 1.0
    assert rows["sat"]["improver"]["test"] == 1.0 and rows["maxcut"]["seed_improver"]["test"] == 0.0
    assert rows["sat"]["seed_solution"]["test"] == 0.01  # with a 5 s limit the seed's give-up (None) ends it
    assert rows["grid"]["paper"] == {"seed_solution": 0.439, "seed_improver": 0.443, "improver": 0.567}

    store = SessionStore(sessions_dir / result["session"])
    meta = store.meta()
    assert meta["kind"] == "transfer" and meta["tasks"] == list(rows) and meta["task_settings"] == {"time_limit": 5}
    scored = list(store.events(kinds=(ev.TRANSFER_SCORED,)))
    assert len(scored) == 15 and {e.data["who"] for e in scored} == {"seed_solution", "seed_improver", "improver"}
    kinds = {e.kind for e in store.events()}
    assert {ev.RUN_FINISHED, ev.LM_REQUEST, ev.SOLUTION_SCORED, ev.SESSION_FINISHED} <= kinds
    store.close()


def test_the_tasks_are_measured_side_by_side(sessions_dir):
    """Each task's û(I0) request is answered only once the other task's has arrived too: the
    transfer finishes only if the two tasks' units run at the same time."""
    both = threading.Barrier(2, timeout=60)
    answer = responder_for()

    def responder(body, index):
        if index == 0 and body["messages"][0]["content"].startswith(SEED_SYSTEM):
            both.wait()
        return answer(body, index)

    with ScriptedLMServer(responder) as server:
        proc = transfer(server, sessions_dir, "--improver", str(FIRST), "--tasks", "grid,parity",
                        "--json", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert server.max_inflight >= 2 and not both.broken
    result = json.loads(proc.stdout)
    rows = {row["task"]: row for row in result["rows"]}
    assert list(rows) == ["grid", "parity"]  # the table in the order asked, whatever finished first
    for name in rows:
        test, val = expected(name, WEAK[name])
        assert rows[name]["seed_improver"]["test"] == pytest.approx(test, abs=1e-9)
        assert rows[name]["improver"]["test"] == 1.0
    store = SessionStore(sessions_dir / result["session"])
    units = [(e.kind, e.data["task"]) for e in store.events(kinds=(ev.TRANSFER_STARTED, ev.TRANSFER_SCORED))]
    store.close()
    started_parity = units.index((ev.TRANSFER_STARTED, "parity"))
    last_grid = max(i for i, unit in enumerate(units) if unit == (ev.TRANSFER_SCORED, "grid"))
    assert started_parity < last_grid
    for name in rows:  # each task's own units in the paper's order
        order = [e for e in units if e[1] == name]
        assert len(order) == 6 and order[::2] == [(ev.TRANSFER_STARTED, name)] * 3


def test_how_many_tasks_at_once():
    paper, quick = session_settings("paper"), session_settings("quick")
    assert lanes_at_once(paper, 5) == 2  # 2 x 5 improver runs fill the 8 requests allowed in flight
    assert lanes_at_once(quick, 5) == 5 and lanes_at_once(quick, 3) == 3
    assert lanes_at_once(paper.with_overrides(max_concurrency=1), 5) == 1
    assert lanes_at_once(quick.with_overrides(max_concurrency=2), 5) == 2


def test_a_killed_run_resumes_without_repeating_recorded_work(sessions_dir):
    gate = threading.Event()
    with ScriptedLMServer(responder_for(gate)) as server:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "stop_tui", "transfer", "--model", "scripted", "--base-url", server.base_url,
             "--preset", "quick", "--sessions-dir", str(sessions_dir), "--improver", str(FIRST),
             "--tasks", "grid", "--runs", "2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            folder = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # wait until the I0 runs are recorded and IT waits on the LM
                # A session's folder is made before its database (written whole, then renamed)
                folders = [f for f in sessions_dir.iterdir() if (f / "session.db").exists()]
                if folders:
                    folder = folders[0]
                    store = SessionStore(folder, readonly=True)  # the run is writing it
                    done = [e.data["who"] for e in store.events(kinds=(ev.TRANSFER_SCORED,))]
                    store.close()
                    if done.count("seed_improver") == 2 and len(server.requests) == 3:
                        break
                time.sleep(0.2)
            else:
                pytest.fail("the transfer run did not get to the given improver")
        finally:
            proc.kill()
            proc.communicate()
        before = len(server.requests)
        gate.set()
        resumed = stop_tui("transfer", "--resume", folder.name, "--sessions-dir", str(sessions_dir), "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert len(server.requests) == before + 2  # only the given improver's two runs
    result = json.loads(resumed.stdout)
    row = result["rows"][0]
    assert row["seed_improver"]["n"] == 2 and row["improver"]["n"] == 2
    assert row["improver"]["test"] == 1.0
    assert row["seed_improver"]["test"] == pytest.approx(0.438874651123, abs=1e-12)
    store = SessionStore(folder)
    keys = [(e.data["who"], e.data["run"]) for e in store.events(kinds=(ev.TRANSFER_SCORED,))]
    store.close()
    assert sorted(keys) == sorted({(w, k) for w in ("seed_solution", "seed_improver", "improver") for k in (1, 2)})

    # A finished session resumes to its table without a single LM call, in md and csv.
    with ScriptedLMServer(responder_for()) as idle:
        md = stop_tui("transfer", "--resume", folder.name, "--sessions-dir", str(sessions_dir),
                      "--base-url", idle.base_url, "--format", "md")
        table = stop_tui("transfer", "--resume", folder.name, "--sessions-dir", str(sessions_dir),
                         "--base-url", idle.base_url, "--format", "csv")
        assert idle.requests == []
    assert md.returncode == 0 and md.stdout.startswith("| task |") and "| grid | 43.9 [43.9, 43.9]" in md.stdout
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert rows[0]["task"] == "grid" and float(rows[0]["improver_test"]) == 1.0
    assert float(rows[0]["paper_improver"]) == 0.567


def test_improver_from_a_session_and_iteration(sessions_dir):
    store = SessionStore.create(sessions_dir, {"task": "lpn"}, name="stop-run")
    first, second = "def improve_algorithm(a, b, c):\n    return a\n", "def improve_algorithm(a, b, c):\n    return None\n"
    store.append(ev.Event(ev.ITERATION_ACCEPTED, "it0", {"iteration": 0, "improver": store.put_text(first)}))
    store.append(ev.Event(ev.ITERATION_ACCEPTED, "it1", {"iteration": 1, "improver": store.put_text(second)}))
    store.append(ev.Event(ev.ITERATION_REJECTED, "it2", {"iteration": 2, "kept": store.put_text(second)}))
    store.close()
    assert resolve_improver("stop-run:0", sessions_dir) == (first, "stop-run:0")
    assert resolve_improver("stop-run:1", sessions_dir)[0] == second
    assert resolve_improver("stop-run", sessions_dir) == (second, "stop-run:2")
    with pytest.raises(UserError, match="no iteration 7"):
        resolve_improver("stop-run:7", sessions_dir)
    with pytest.raises(UserError, match="neither a file nor a session"):
        resolve_improver("nothing-here", sessions_dir)


@pytest.mark.parametrize("args,message", [
    (["--improver", "missing.py"], "neither a file nor a session"),
    (["--improver", str(FIRST), "--tasks", "nosuch"], "unknown task"),
    (["--improver", str(FIRST), "--tasks", "meta"], "not a downstream task"),
    (["--improver", str(FIRST), "--runs", "0"], "--runs"),
    ([], "--improver"),
    (["--improver", str(FIRST), "--tasks", "grid", "--set", "time_limit=1"], "task grid has no setting time_limit"),
    (["--improver", str(FIRST), "--set", "novalue"], "KEY=VALUE"),
])
def test_user_errors_exit_2(sessions_dir, args, message):
    proc = stop_tui("transfer", "--model", "local", "--sessions-dir", str(sessions_dir), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.slow
def test_transfer_and_a_baseline_on_the_local_model(sessions_dir):
    """The real embedded model (SmolLM2): the commands run end to end and every number is a
    score in [0, 1] (the model rarely writes a working program)."""
    proc = stop_tui("transfer", "--improver", str(FIRST), "--tasks", "grid", "--sessions-dir", str(sessions_dir),
                    "--json", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["seed_solution"]["test"] == pytest.approx(0.438874651123, abs=1e-12)
    for who in ("seed_improver", "improver"):
        assert 0.0 <= row[who]["test"] <= 1.0 and row[who]["n"] == 1
    proc = stop_tui("baseline", "--task", "grid", "--method", "cot", "--sessions-dir", str(sessions_dir),
                    "--json", timeout=1200)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == "cot" and all(0.0 <= s <= 1.0 for s in result["scores"])

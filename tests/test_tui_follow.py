"""Watching a session another process runs, and viewing one whose LM server is gone.

Real parts: a real `stop-tui run` subprocess against the scripted LM server appends to the
session while the app (Textual Pilot) follows it read-only; the session's OS lock says who
runs it; when that process ends the app offers to take the session over."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
from pathlib import Path

from lm_helpers import GatedResponder, kill9, only_session, responder, run_args, start, stop_tui
from scripted_server import ScriptedLMServer
from tui_helpers import notices, screen_text, settle, wait_until

from stop_tui.engine.lock import holder
from stop_tui.tui.launch import resume_app
from stop_tui.tui.screens.takeover import TakeOverScreen
from stop_tui.tui.synthetic import write_session
from stop_tui.tui.widgets.header import FIXED_TEMPERATURE, SessionHeader
from stop_tui.tui.widgets.scores import ScoresPane

SIZE = (160, 48)


def header_text(app) -> str:
    return str(app.main.query_one(SessionHeader).render())


def last_seq(folder: Path) -> int:
    """The newest committed event, seen through a connection of our own (as a third party)."""
    con = sqlite3.connect(f"file:{folder / 'session.db'}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        con.close()


def test_a_headless_run_is_followed_live_then_offered_for_take_over(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    sessions = tmp_path / "sessions"
    gate = GatedResponder()
    with ScriptedLMServer(gate) as server:
        # Two LM calls allowed: the seed's run and iteration 1's improver call; the third is
        # refused by the cap, so the run pauses (exit 3) rather than finishing.
        proc = start(*run_args(server, sessions, "--iterations", "2", "--max-calls", "2"))
        try:
            assert gate.waiting.wait(120), proc.stderr.read() if proc.poll() is not None else "no request"
            folder = sessions / only_session(sessions)
            assert holder(folder)["pid"] == proc.pid
            app = resume_app(sessions, folder.name)
            lags: list[float] = []

            async def go():
                async with app.run_test(size=SIZE) as pilot:
                    await wait_until(pilot, lambda: app.holder is not None, 5)
                    head = header_text(app)
                    assert "watching" in head and f"read-only: run by pid {proc.pid} on " in head
                    assert socket.gethostname() in head and " since " in head
                    assert app.session is None and app.engine_on is False  # no engine, no backend
                    # nothing scored yet: the pane says the other process is at it (not "press run")
                    assert "No scores yet: the seed improver is being scored." in str(
                        app.main.query_one(ScoresPane).render())

                    await pilot.press("space")  # the keys that drive say why they do nothing
                    await pilot.press("r")
                    await pilot.pause()
                    assert notices(app).count(
                        f"read-only: session is run by pid {proc.pid} on {socket.gethostname()}") == 2
                    assert app.session is None

                    # Each request let through makes the other process commit events: each shows
                    # up in the app within a second of its commit.
                    for _ in range(2):
                        before = last_seq(folder)
                        gate.release()
                        while last_seq(folder) == before:
                            await pilot.pause(0.01)
                        committed = last_seq(folder)
                        lags.append(await wait_until(pilot, lambda c=committed: app.view.model.last_seq >= c, 5))
                    # The seed's scoring goes on in the other process after its call (its
                    # solutions are scored there): the verdict shows up once it is committed.
                    await wait_until(pilot, lambda: "T=0 accepted seed" in screen_text(app), 60,
                                     "the seed's verdict, followed")
                    assert "it0/check/r1" in app.view.model.nodes

                    # The cap pauses the run; the process ends and the lock is free.
                    await wait_until(pilot, lambda: proc.poll() is not None, 60)
                    assert proc.returncode == 3
                    await wait_until(pilot, lambda: isinstance(app.screen, TakeOverScreen)
                                     and "stopped running this session" in screen_text(app), 10,
                                     "the take-over offer on screen")
                    text = screen_text(app)
                    assert f"pid {proc.pid} on" in text and "stopped running this session" in text
                    assert "paused" in text
                    assert app.view.model.state == "paused"
                    # Every event of the other process was followed.
                    assert app.view.model.last_seq == last_seq(folder)

                    await pilot.press("o")  # take it over: the lock and an engine here
                    await wait_until(pilot, lambda: app.session is not None and app.engine_on, 30)
                    assert holder(folder)["pid"] == os.getpid()
                    assert "watching" not in header_text(app) and "paused" in header_text(app)
                    await pilot.press("ctrl+q")

            asyncio.run(go())
            assert app.session is not None
            app.session.close()
            assert holder(folder) is None
            assert lags and max(lags) < 1.0, lags
        finally:
            kill9(proc)


def _refusing_port(port: int) -> tuple[socket.socket, list]:
    """Listen where the LM server was, counting every connection made to it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    sock.settimeout(0.2)
    seen: list = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append(conn)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return sock, seen


def test_a_finished_session_opens_with_its_lm_server_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    sessions = tmp_path / "sessions"
    with ScriptedLMServer(responder) as server:
        done = stop_tui(*run_args(server, sessions))
        assert done.returncode == 0, done.stderr
        port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    sid = only_session(sessions)
    db = sessions / sid / "session.db"
    before = db.read_bytes()
    listener, connections = _refusing_port(port)
    try:
        app = resume_app(sessions, sid)

        async def go():
            async with app.run_test(size=SIZE) as pilot:
                await settle(pilot)
                model = app.view.model
                assert model.state == "finished" and model.verdicts[1][0] is not None
                scores = str(app.main.query_one(ScoresPane).render())
                val = model.accepted[1][0]
                assert f"{val:.4f}" in scores  # its scores, drawn from the log
                assert "finished" in header_text(app)
                await pilot.press("r")
                await pilot.pause()
                assert "This session is finished." in notices(app)
                await pilot.press("ctrl+q")

        asyncio.run(go())
        app.follower.close()
        app.store.close()
        assert app.session is None
        assert connections == []  # nothing contacted the server's address
        assert db.read_bytes() == before  # viewing changed nothing
        assert not (sessions / sid / "session.db-wal").exists()
    finally:
        listener.close()


def test_an_openai_session_opens_without_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    write_session(tmp_path, "gpt", iterations=1, planned=2, model="gpt-4o-mini").close()
    app = resume_app(tmp_path, "gpt")

    async def go():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert "gpt-4o-mini" in header_text(app) and "paused" in header_text(app)
            assert "T=1 accepted" in screen_text(app)
            await pilot.press("ctrl+q")

    asyncio.run(go())
    assert app.session is None  # viewing built no session, no backend


def test_meta_learned_by_the_runner_reaches_the_header(tmp_path, monkeypatch):
    """`lm_fixed_temperature` written by the process that runs the session shows while it is
    watched (a plain SQLite writer stands in for it)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    write_session(tmp_path, "reasoning", iterations=1, planned=2).close()
    app = resume_app(tmp_path, "reasoning")

    async def go():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert FIXED_TEMPERATURE not in header_text(app)
            con = sqlite3.connect(tmp_path / "reasoning" / "session.db")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('lm_fixed_temperature', 'true')")
            con.commit()
            try:
                await wait_until(pilot, lambda: "temperature fixed by the model" in header_text(app), 3)
                header = app.main.query_one(SessionHeader)
                assert FIXED_TEMPERATURE in header_text(app) or FIXED_TEMPERATURE in header.tooltip
            finally:
                con.close()
            await pilot.press("ctrl+q")

    asyncio.run(go())

"""The app of `stop-tui new` and `stop-tui resume` (commands/tui_launch.py reads their options):
built on a new session or a read-only viewer, run, and closed cleanly."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from stop_tui.engine.errors import UserError
from stop_tui.engine.gate import Gate
from stop_tui.engine.store import cli_name

if TYPE_CHECKING:
    from stop_tui.engine.session import Session
    from stop_tui.engine.store import SessionStore
    from stop_tui.tui.app import StopApp

# After the screen closes (itself within ~2 s of ctrl+q): how much longer the engine may take to
# stop. The engine lets LM calls in flight finish and be recorded (up to 10 s on its side); we
# give them a few seconds more, then leave: an unfinished call is asked again on resume.
STOP_WAIT = 3.0


def new_app(session: Session) -> StopApp:
    """`stop-tui new`: the app running the session just created (its gate says whether it
    starts running or paused)."""
    from stop_tui.tui.app import StopApp

    return StopApp(_interrupt_local_model_on_quit(session))


def resume_app(sessions_dir: Path, session: str | None, overrides: dict | None = None) -> StopApp:
    """`stop-tui resume [SESSION]`: the session (or a picker) viewed read-only. Nothing contacts
    an LM server and nothing is locked until the user runs or steps it; then `take_over` opens
    it with an engine (its lock, its backend, `overrides` saved into its settings). A session
    another process runs is followed live until that process ends."""
    from stop_tui.engine.session import open_session
    from stop_tui.tui.app import StopApp

    def take_over(folder: str) -> Session:
        return _interrupt_local_model_on_quit(
            open_session(sessions_dir, folder, gate=Gate(running=False), overrides=overrides))

    if session:
        return StopApp(store=viewing_store(sessions_dir, session), open_session_fn=take_over)
    return StopApp(sessions_dir=sessions_dir, open_session_fn=take_over)


def sweep_app(folder: Path) -> StopApp:
    """`stop-tui resume SWEEP`: the table of the sweep's runs; any run opens read-only."""
    from stop_tui.engine.sweep.layout import read_sweep
    from stop_tui.tui.app import StopApp

    return StopApp(sweep=read_sweep(folder))


def viewing_store(sessions_dir: Path, session: str) -> SessionStore:
    """The session's store opened read-only, for the TUI to view and follow."""
    from stop_tui.engine.store import SessionStore

    store = SessionStore.open(sessions_dir, session, readonly=True)
    try:
        store.verify()  # a damaged log: one line now, not a broken screen
    except BaseException:
        store.close()
        raise
    kind = store.meta().get("kind", "stop")
    if kind != "stop":
        store.close()
        hint = f"continue it with `stop-tui {kind} --resume {cli_name(store.folder)}`" if kind == "transfer" else \
            f"see `stop-tui show {cli_name(store.folder)}`"
        raise UserError(f"session {store.id} is a {kind} session: {hint}")
    return store


def run_app(app: StopApp) -> int:
    """Run the app; afterwards stop the engine (giving the LM call in flight STOP_WAIT seconds)
    and close the session, or the viewed store. Returns the exit code."""
    try:
        code = app.run()
    finally:
        session = app.session
        if session is not None:
            session.gate.cancel()
    if session is None:  # only viewed: nothing to save
        if app.follower is not None:
            app.follower.close()
        if app.store is not None:
            app.store.close()
        return code or 0
    if app.engine_running:
        print("stop-tui: stopping: letting the LM call in flight finish (a few seconds; ctrl+c leaves now)…",
              file=sys.stderr, flush=True)
        try:
            app.engine_done.wait(STOP_WAIT)
        except KeyboardInterrupt:
            pass
        if not app.engine_done.is_set():
            # A server's answer is still on its way (the embedded model never gets here: its
            # worker was killed on quit). Everything that completed is committed (one SQLite
            # transaction per event) and sandboxes die with this process; the call is asked
            # again on resume. A thread blocked on a socket cannot be interrupted, and the
            # interpreter would join it at exit: leave now rather than wait for the server.
            print(f"stop-tui: stopped; the LM call in flight was abandoned (it is redone on resume).\n"
                  f"stop-tui: session {session.id} saved; resume with `stop-tui resume {cli_name(session.store.folder)}`",
                  file=sys.stderr, flush=True)
            os._exit(0)
    session.close()  # kills the embedded model's worker, if it still runs
    print(f"stop-tui: session {session.id} saved; resume with `stop-tui resume {cli_name(session.store.folder)}`",
          file=sys.stderr, flush=True)
    return code or 0


def _interrupt_local_model_on_quit(session):
    """When the user quits (the gate is cancelled, and not by a cap), kill the embedded model's
    worker at once: its calls cost nothing, and waiting for a generation nobody wants is what
    made quitting slow. The call in flight is not recorded and is asked again on resume. Paid
    backends keep the engine's drain (their answers are recorded)."""
    from stop_tui.engine.lm.local_backend import LocalBackend

    backend = session.engine.lm.backend
    if isinstance(backend, LocalBackend):
        def watch() -> None:
            session.gate.cancel_event.wait()
            if session.engine.lm.stop is None:  # a cap pauses the run: its calls are drained
                backend.close()

        threading.Thread(target=watch, name="local-model-quit", daemon=True).start()
    return session

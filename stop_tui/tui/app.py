"""The Textual workbench: one thread worker runs the engine; a feeder thread (tui/feeder.py)
folds the session's events into its model and posts immutable snapshots; the UI thread only
draws snapshots. A live, a resumed and a finished session are drawn the same way."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events, work
from textual.app import App
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.worker import Worker, WorkerState, get_current_worker

from stop_tui.engine.events import Event
from stop_tui.engine.store import SessionStore, cli_name
from stop_tui.engine.sweep.layout import is_sweep, read_sweep
from stop_tui.tui.actions import APP, bindings, key_text, live_keys
from stop_tui.tui.commands import StopCommands
from stop_tui.tui.feeder import Feeder
from stop_tui.tui.follow import POLL_SECONDS, Follower, Holder
from stop_tui.tui.gc_pacing import GcPacer
from stop_tui.tui.messages import (
    EngineEvents,
    FeedFailed,
    FollowState,
    GateWaiting,
    SessionSnapshot,
)
from stop_tui.tui.model import SessionModel, Snapshot
from stop_tui.tui.screens.compare import ComparePickScreen, CompareRunScreen, CompareScreen
from stop_tui.tui.screens.help import HelpScreen
from stop_tui.tui.screens.main import MainScreen
from stop_tui.tui.screens.picker import PickerScreen
from stop_tui.tui.screens.sweep import SweepRunScreen, SweepScreen
from stop_tui.tui.screens.takeover import TakeOverScreen
from stop_tui.tui.theming import DEFAULT_THEME, discover_themes, load_config, save_config

if TYPE_CHECKING:
    from stop_tui.engine.session import Session
    from stop_tui.engine.sweep.layout import Sweep

QUIT_GRACE = 2.0  # seconds the app waits for the engine to stop before leaving anyway
GC_TICK = 0.25  # seconds between two looks at whether a full garbage collection is due


class _NoWaitExecutor(ThreadPoolExecutor):
    """The loop's default executor for the engine worker: shutting the app down does not
    wait for an LM call in flight (launch() decides how long to wait for it)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)


@dataclass
class ViewState:
    """What the main screen's panes read: the latest snapshot of the session and how to fetch
    texts."""

    model: Snapshot
    texts: Callable[[str | None], str | None]
    seed_solution: str | None
    session_dir: Path | None
    seed_improver: str | None = None


def _seed_solution(task_name: str) -> str | None:
    try:
        from stop_tui.engine.tasks import load_task

        return load_task(task_name).seed
    except Exception:  # noqa: BLE001 - a missing task only loses the solution diffs
        return None


def _seed_improver(settings: dict) -> str | None:
    """The improver T=0 scores (the meta task's seed), known before anything runs."""
    try:
        from stop_tui.engine.session import META_SANDBOX
        from stop_tui.engine.tasks import META, load_task

        return load_task(META_SANDBOX if settings.get("sandbox_flag_experiment") else META).seed
    except Exception:  # noqa: BLE001 - a broken install only loses the first frame's source
        return None


def _run_complete(session: Session) -> bool:
    """Every planned iteration is done (as the engine replayed its log): nothing to run."""
    st = session.engine.state
    return bool(st.seed_scored) and st.iterations_done >= session.engine.settings.iterations


class StopApp(App[int]):
    """`session`: a session this process runs (the engine starts at once, paused or not).
    `store`: a session to view, read-only and followed live while another process runs it;
    with `open_session_fn` (session id -> Session, which takes the session's lock and makes the
    LM backend) run and step keys take it over. Nothing contacts an LM server before that.
    `sweep`: a table of the sweep's runs (screens/sweep.py); enter opens a run the way `store`
    is viewed (read-only: the sweep owns its runs), escape goes back to the table."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "stop-tui"
    COMMANDS = App.COMMANDS | {StopCommands}
    BINDINGS = bindings(APP)
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, session: Session | None = None, *, store: SessionStore | None = None,
                 sessions_dir: Path | None = None, open_session_fn: Callable[[str], Session] | None = None,
                 engine: bool = True, theme: str | None = None, remember_theme: bool = True,
                 sweep: Sweep | None = None) -> None:
        super().__init__()
        self.session = session
        self.sweep = sweep
        self.store = session.store if session is not None else store
        self.sessions_dir = sessions_dir
        self.open_session_fn = open_session_fn if engine else None
        self.engine_on = engine and session is not None
        self.remember_theme = remember_theme
        self.view: ViewState | None = None
        self.main: MainScreen | None = None
        self.feeder: Feeder | None = None  # owns the session's model once a session is open
        self._log_read = False  # the opening read of the log has been drawn
        self._gc = GcPacer()  # full garbage collections between keys (tui/gc_pacing.py)
        self._engine_worker: Worker | None = None
        self.engine_done = threading.Event()
        self.engine_outcome: str | None = None
        self.stopping = False
        self._waiting_at: str | None = None
        # following (no engine here): who runs the session, and the follower thread's progress
        self.holder: Holder | None = None
        self.follower: Follower | None = None
        self._follow_worker: Worker | None = None
        self._follow_done = threading.Event()
        self._opening: str | None = None  # a take-over in progress: the action to do once open
        # A run opened from a table (a sweep's, a comparison's): the screen it is viewed in
        # (escape goes back), and the take-over function it was opened without.
        self._run_screen: type[MainScreen] | None = None
        self._kept_open_fn: Callable[[str], Session] | None = None
        self._after_open: str | None = None
        self.syntax_styles: dict[str, str] = {}
        self.theme_names: list[str] = []
        for tf in discover_themes():
            self.register_theme(tf.theme)
            self.syntax_styles[tf.theme.name] = tf.syntax
            self.theme_names.append(tf.theme.name)
        config = load_config()
        keymap = config.get("keymap")  # {"binding id": "keys"}, e.g. {"run.step_iteration": "n"}
        if isinstance(keymap, dict):
            self.set_keymap({str(k): str(v) for k, v in keymap.items()})
        wanted = theme or config.get("theme") or DEFAULT_THEME
        if wanted not in self.available_themes:
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = wanted
        self._initial_theme = wanted

    # -- startup --------------------------------------------------------------------------
    def on_mount(self) -> None:
        asyncio.get_running_loop().set_default_executor(
            _NoWaitExecutor(max_workers=4, thread_name_prefix="stop-tui"))
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self._gc.start()  # the app as built: frozen
        self.set_interval(GC_TICK, self._gc.tick)
        if self.store is not None:
            self._open_store()
        elif self.sweep is not None:
            self.push_screen(SweepScreen(self.sweep))
        elif self.sessions_dir is not None:
            self.push_screen(PickerScreen(self.sessions_dir), callback=self._picked)
        else:
            self.exit(2, message="no session to show")

    def _picked(self, session_id: str | None) -> None:
        if not session_id:
            self.exit(0)
            return
        try:
            assert self.sessions_dir is not None
            if is_sweep(self.sessions_dir / session_id):  # the table of its runs
                self.sweep = read_sweep(self.sessions_dir / session_id)
                self.push_screen(SweepScreen(self.sweep))
                return
            self.store = SessionStore.open(self.sessions_dir, session_id, readonly=True)
        except Exception as exc:  # noqa: BLE001 - show it, stay in the picker
            self.notify(f"cannot open {session_id}: {exc}", severity="error", timeout=8)
            self.push_screen(PickerScreen(self.sessions_dir), callback=self._picked)
            return
        self._open_store()

    def _text(self, digest: str | None) -> str | None:
        if self.follower is not None:
            return self.follower.text(digest)
        return self.store.text(digest) if self.store is not None else None

    def _open_store(self) -> None:
        """Draw what the session's meta says at once; the feeder reads the log off this thread
        and the panes fill in from its snapshots (`_log_drawn` once it is all read)."""
        store = self.store
        assert store is not None
        model = SessionModel(store.meta(), store.id)
        self._gc.held = True  # until the log is drawn (its model is frozen then)
        self.feeder = Feeder(model, lambda snap: self.post_message(SessionSnapshot(snap)),
                             on_message=self.post_message, meta=self._live_meta,
                             on_error=lambda exc: self.post_message(FeedFailed(exc)))
        if self.engine_on:
            store.subscribe(self._listener)  # before reading the log: nothing falls in between
            if self.session is not None:
                self.session.gate.on_wait = lambda point: self.post_message(GateWaiting(point))
        self.feeder.load(store.events)
        self.view = ViewState(model.snapshot(), self._text, _seed_solution(model.task), store.folder,
                              _seed_improver(model.settings))
        self.main = (self._run_screen or MainScreen)(self.view)
        self.push_screen(self.main)
        if self.engine_on and self.session is not None and not _run_complete(self.session):
            self._engine_started()  # at once: it waits at its first gate for the keys
        self.update_state()
        self.call_after_refresh(self.feeder.start)  # the first frame needs no log

    def _live_meta(self) -> dict:
        """The meta of a session run here (the LM layer records what it learns there)."""
        return self.store.meta() if self.engine_on and self.store is not None else {}

    def _log_drawn(self, snapshot: Snapshot) -> None:
        """The whole log as it was at opening is drawn: follow it when another process may
        write it."""
        if not self.engine_on and self.store is not None and self.feeder is not None:
            self.follower = Follower(self.store.folder, self.feeder.loaded_after)
            self._start_following()

    def on_session_snapshot(self, message: SessionSnapshot) -> None:
        snapshot = message.snapshot
        if self.view is None or self.feeder is None:
            return
        self.view.model = snapshot
        if self.main is not None and self.main.is_mounted:
            self.main.show(snapshot)
        if not self._log_read and not snapshot.loading and snapshot.changes.full:
            self._log_read = True
            self._log_drawn(snapshot)
            # The model of a large log is hundreds of thousands of objects that live as long as
            # the view: frozen, no collection walks them again (thawed when the view closes).
            self._gc.start()
            self._gc.held = False
        self.update_state()
        # Taken once it is on screen: the feeder spaces live snapshots by what drawing this one
        # cost, the compositor's render included.
        self.call_after_refresh(self.feeder.took, snapshot)

    def on_feed_failed(self, message: FeedFailed) -> None:
        if self.view is None:  # a sweep's run view, closed while it was read
            return
        self._gc.held = False  # no model is being built any more
        self.notify(f"cannot read the session: {message.error}", severity="error", timeout=15)

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until everything the app was given so far (the log read at opening, live,
        followed or injected events) is folded in and drawn: for tests and benchmarks."""
        deadline = time.monotonic() + timeout
        while True:
            await self._handled()
            if self.feeder is None or self.feeder.idle():
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the session view did not settle")
            await asyncio.sleep(0.005)
        await self._handled()  # what the feeder posted after its last snapshot

    async def _handled(self) -> None:
        """Return once the messages posted to the app before now are handled."""
        done = asyncio.Event()
        self.call_later(done.set)
        await done.wait()

    def _engine_started(self) -> None:
        """Start the engine worker (the gate decides whether anything runs), after telling the
        user the worst case of what is left, before anything is spent."""
        if self.session is not None:
            from stop_tui.engine.lm.caps import engine_projection

            engine = self.session.engine
            self.notify(engine_projection(engine, engine.settings.iterations), title="Worst case", timeout=10)
        self.start_engine()

    # -- following a session another process runs ----------------------------------------
    def _start_following(self) -> None:
        self._follow_done.clear()
        self._follow_worker = self._follow()

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow", name="follow")
    def _follow(self) -> None:
        """Poll the log for new events and the lock for its holder; the events go through the
        same queue as a live engine's, the holder in a message."""
        worker = get_current_worker()
        follower, feeder = self.follower, self.feeder  # this view's (a sweep's table may close it)
        assert follower is not None and feeder is not None
        try:
            seen: tuple | None = None
            while not worker.is_cancelled:
                poll = follower.poll()
                if poll.events:
                    feeder.put(poll.events)
                if seen != (poll.holder, poll.meta):
                    seen = (poll.holder, poll.meta)
                    feeder.post_after(FollowState(poll.holder, poll.meta))  # after its events
                worker.cancelled_event.wait(POLL_SECONDS)
        finally:
            self._follow_done.set()

    def on_follow_state(self, message: FollowState) -> None:
        if self.view is None:  # a sweep's run view, closed since
            return
        before, self.holder = self.holder, message.holder
        if self.feeder is not None:
            self.feeder.put_meta(message.meta)
        if before is not None and self.holder is None:
            self._holder_left(before)
        elif self.holder is not None and isinstance(self.screen, TakeOverScreen):
            self.screen.dismiss(False)  # someone took it again
        self.update_state()

    def _holder_left(self, before: Holder) -> None:
        model = self.view.model if self.view is not None else None
        if model is not None and model.state == "finished":
            self.notify(f"The run by {before.who} finished.", title="Session finished", timeout=10)
            return
        if self.open_session_fn is None:
            self.notify(f"{before.who} stopped running this session.", timeout=10)
            return
        reason = model.pause_reason if model is not None and model.state == "paused" else None
        self.push_screen(TakeOverScreen(before, reason), callback=self._take_over_answer)

    def _take_over_answer(self, take: bool | None) -> None:
        if take:
            self.take_over(None)

    def take_over(self, then: str | None) -> None:
        """Open the session with an engine here (its lock and LM backend), then do `then`
        (`run`, `step_iteration`, `step_call` or None: stay paused). Off the UI thread."""
        if self._opening is not None or self.store is None or self.open_session_fn is None:
            return
        self._opening = then or ""
        if self._follow_worker is not None:
            self._follow_worker.cancel()
        self.update_state()
        self._open_for_engine(str(self.store.folder))

    @work(thread=True, exclusive=True, exit_on_error=False, group="open", name="open")
    def _open_for_engine(self, session: str) -> Session:
        self._follow_done.wait(5)  # the follower has stopped: its last seq is final
        assert self.open_session_fn is not None
        return self.open_session_fn(session)

    def _adopt(self, session: Session) -> None:
        """The session is ours now: catch up on the log, switch to its store, start the engine."""
        then = self._opening
        self._opening = None
        viewing, follower = self.store, self.follower
        self.session, self.store, self.engine_on, self.holder = session, session.store, True, None
        self.follower = None
        session.store.subscribe(self._listener)
        session.gate.on_wait = lambda point: self.post_message(GateWaiting(point))
        assert self.feeder is not None
        after = follower.after if follower is not None else self.feeder.loaded_after
        self.feeder.read(lambda: session.store.events(after=after))  # what the holder wrote last
        if follower is not None:
            follower.close()
        if viewing is not None and viewing is not session.store:
            viewing.close()  # the feeder read it only at opening
        self.feeder.put_meta(session.store.meta())
        self._after_open = then or None  # done once the engine waits at its first gate
        self.notify(f"Session {session.id} is run here now.", timeout=5)
        self._engine_started()
        self.update_state()

    def _open_failed(self, error: BaseException | None) -> None:
        self._opening = None
        self.notify(f"cannot take the session over: {error}", severity="error", timeout=10)
        self._start_following()
        self.update_state()

    # -- a sweep's runs, compared sessions ----------------------------------------------------
    def open_run(self, folder: Path, screen: type[MainScreen] = SweepRunScreen) -> None:
        """Open one run of the table on screen (a sweep's, a comparison's) in the session view
        `screen`, read-only and followed live; escape (close_run) goes back to the table."""
        if self.store is not None:
            return
        try:
            self.store = SessionStore(folder, readonly=True)
        except Exception as exc:  # noqa: BLE001 - show it, stay at the table
            self.notify(f"cannot open {folder.name}: {exc}", severity="error", timeout=8)
            return
        # A sweep runs (and resumes) its runs; a compared session is only read here.
        self._kept_open_fn, self.open_session_fn = self.open_session_fn, None
        self._run_screen = screen
        self._open_store()

    def action_close_run(self) -> None:
        """Back from a run's view to the table it was opened from: stop following it, close it."""
        if self._run_screen is None or self.store is None or self.session is not None:
            return
        if self._follow_worker is not None:
            self._follow_worker.cancel()
        for part in (self.feeder, self.follower, self.store):
            if part is not None:
                part.close()
        self.view = self.main = self.feeder = self.follower = self.store = None
        self._follow_worker, self._log_read, self.holder = None, False, None
        self._gc.thaw()  # the closed run's model can be collected
        self._gc.held = False
        self.open_session_fn, self._kept_open_fn, self._run_screen = self._kept_open_fn, None, None
        self.pop_screen()

    def action_compare(self) -> None:
        """The palette's "sessions: compare" (`c`): pick sessions of this window's folder to
        compare (the session it shows marked); on a sweep's table, compare its marked runs."""
        screen = self.screen
        if isinstance(screen, SweepScreen):
            screen.action_compare()
            return
        if isinstance(screen, ComparePickScreen | CompareScreen | ModalScreen):  # help, take over: not here
            return
        if any(isinstance(s, ComparePickScreen | CompareScreen) for s in self.screen_stack):
            self.notify("Comparing already: escape goes back to the comparison.", timeout=4)
            return
        folder = (self.store.folder.parent if self.store is not None
                  else self.sweep.folder if self.sweep is not None else self.sessions_dir)
        if folder is None:
            return
        self.push_screen(ComparePickScreen(folder, [self.store.folder] if self.store is not None else []))

    def compare(self, sessions: list[tuple[str, Path]], title: str) -> None:
        """The compare screen on (name, session folder)s, followed live; escape comes back."""
        self.push_screen(CompareScreen(sessions, title))

    def open_compared(self, folder: Path, name: str) -> None:
        """Enter on a compared run: open it read-only (a table is all this window shows), or go
        back to it when it is the session this window shows."""
        if self.store is None:
            self.open_run(folder, CompareRunScreen)
            return
        if self.main is not None and Path(self.store.folder).resolve() == Path(folder).resolve():
            while self.screen is not self.main and len(self.screen_stack) > 1:
                self.pop_screen()
            return
        self.notify(f"This window shows session {self.store.id}; open {name} with "
                    f"`stop-tui resume {cli_name(folder)}`.", severity="warning", timeout=8)

    # -- the engine worker ---------------------------------------------------------------
    @property
    def engine_running(self) -> bool:
        """The engine was started here and has not returned yet."""
        return self._engine_worker is not None and not self.engine_done.is_set()

    def start_engine(self) -> None:
        if self._engine_worker is not None and self._engine_worker.state in (WorkerState.PENDING,
                                                                             WorkerState.RUNNING):
            return
        self.engine_done.clear()
        self._engine_worker = self._drive()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="engine")
    def _drive(self) -> str:
        assert self.session is not None
        try:
            return self.session.engine.run()
        finally:
            self.engine_done.set()

    def _listener(self, event: Event) -> None:
        """Called in the engine's thread after each commit: the feeder folds it in."""
        if self.feeder is not None:
            self.feeder.put_event(event)

    def on_engine_events(self, message: EngineEvents) -> None:
        self.inject(message.events)

    def inject(self, events: Iterable[Event]) -> None:
        """Hand events to the feeder (tests, replays); `settled()` waits until they are drawn."""
        if self.feeder is not None:
            self.feeder.put(events)

    def on_gate_waiting(self, message: GateWaiting) -> None:
        self._waiting_at = message.point
        action, self._after_open = self._after_open, None
        if action is not None:  # the key that took the session over: it acts now
            getattr(self, f"action_{'toggle_run' if action == 'run' else action}")()
        self.update_state()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if group == "open":
            if event.state == WorkerState.SUCCESS:
                self._adopt(event.worker.result)
            elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
                self._open_failed(event.worker.error)
            return
        if group == "follow":
            if event.state == WorkerState.ERROR:
                self.notify(f"stopped following the session: {event.worker.error}", severity="error",
                            timeout=15)
            return
        if group != "engine":
            return
        if event.state == WorkerState.SUCCESS:
            self.engine_outcome = event.worker.result
        elif event.state == WorkerState.ERROR:
            self.engine_outcome = "error"
            self.notify(f"the engine stopped: {event.worker.error}", severity="error", timeout=15)
        self.update_state()

    # -- state ----------------------------------------------------------------------------
    def state(self) -> tuple[str, str]:
        if self.view is None:
            return "new", ""
        model = self.view.model
        if self.holder is not None and not self.engine_on:
            return "watching", f"read-only: {self.holder.describe()}"
        if model.state == "finished":
            return "finished", ""
        if self.stopping:
            return "stopping", "finishing the work in flight"
        if self._opening is not None:
            return "opening", "taking the session over"
        if not self.engine_on or self.session is None:
            if self.open_session_fn is None:
                if self.sweep is not None:
                    return "viewing", f"a run of sweep {self.sweep.id}, read-only"
                if self._run_screen is not None:
                    return "viewing", "opened from Compare, read-only"
                return "viewing", "engine off"
            why = f"paused: {model.pause_reason}; " if model.state == "paused" and model.pause_reason else ""
            return "paused", why + self._keys_hint(("run.toggle", "runs"), ("run.step_iteration", "steps"))
        worker = self._engine_worker
        if worker is None or worker.state not in (WorkerState.PENDING, WorkerState.RUNNING):
            if self.engine_outcome == "error":
                return "paused", "the engine failed (see the notification); " + self._keys_hint(("run.toggle", "retries"))
            if model.state == "paused" and model.pause_reason:
                return "paused", model.pause_reason
            return "paused", self._keys_hint(("run.toggle", "runs"), ("run.step_iteration", "steps"))
        mode = self.session.gate.mode
        if mode == "run":
            return "running", ""
        if mode in ("call", "iteration"):
            return "stepping", "one LM call" if mode == "call" else "to the next iteration boundary"
        where = {"call": "before an LM call", "iteration": "at an iteration boundary"}.get(self._waiting_at or "", "")
        return "paused", where

    def update_state(self) -> None:
        if self.main is not None and self.main.is_mounted:
            from stop_tui.tui.widgets.header import SessionHeader
            from stop_tui.tui.widgets.scores import ScoresPane

            try:
                header, scores = self.main.query_one(SessionHeader), self.main.query_one(ScoresPane)
            except NoMatches:  # the app is closing: its panes are being removed
                return
            state = self.state()
            header.set_state(*state)
            scores.set_activity(state[0])

    # -- actions --------------------------------------------------------------------------
    def _can_drive(self, action: str) -> bool:
        """Whether run / step keys act on an engine here; if the session can be taken over,
        start doing so (the action follows once it is open)."""
        if self.view is None:
            return False
        if self.holder is not None and not self.engine_on:
            self.notify(f"read-only: session is run by {self.holder.who}", severity="warning")
            return False
        if not self.engine_on and not self._log_read:
            self.notify("Still reading the session's log; the keys act once it is read.", timeout=3)
            return False
        if self.view.model.state == "finished":
            self.notify("This session is finished.", severity="information")
            return False
        if self._opening is not None:  # still taking it over: this key acts once it is open
            self._opening = action
            self.notify("Opening the session; the key acts once it is open.", timeout=3)
            return False
        if self.stopping:
            return False
        if not self.engine_on or self.session is None:
            if self.open_session_fn is not None:
                self.take_over(action)
            elif self.sweep is not None:
                self.notify(f"A run of sweep {self.sweep.id}: read-only here (`stop-tui sweep --resume "
                            f"{self.sweep.id}` runs it).", severity="warning")
            elif self._run_screen is not None:
                self.notify(f"Opened from Compare: read-only here (`stop-tui resume {cli_name(self.store.folder)}` "
                            "runs it).", severity="warning")
            else:
                self.notify("The engine is off: this view replays the session's log.", severity="warning")
            return False
        return True

    def action_step_iteration(self) -> None:
        if self._can_drive("step_iteration"):
            self.session.gate.step_iteration()
            self._waiting_at = None
            self.start_engine()
            self.update_state()

    def action_step_call(self) -> None:
        if self._can_drive("step_call"):
            self.session.gate.step_call()
            self._waiting_at = None
            self.start_engine()
            self.update_state()

    def action_toggle_run(self) -> None:
        if self._can_drive("run"):
            gate = self.session.gate
            if gate.mode == "run":
                gate.pause()
            else:
                gate.run()
                self._waiting_at = None
            self.start_engine()
            self.update_state()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self._gc.input()  # a full collection waits until the keys pause
        await super().on_event(event)

    def keys_now(self) -> dict[str, list[str]]:
        """The keys bound now on the main screen (after any keymap), by binding id."""
        return live_keys(self.main) if self.main is not None and self.main.is_mounted else {}

    def _keys_hint(self, *ids_and_words: tuple[str, str]) -> str:
        keys = self.keys_now()
        return ", ".join(f"{key_text(keys, i)} {word}" for i, word in ids_and_words)

    def action_help(self) -> None:
        focused = self.focused
        pane_help = None
        node = focused
        while node is not None and pane_help is None:
            pane_help = getattr(type(node), "HELP", None) if type(node).__module__.startswith("stop_tui") else None
            node = node.parent
        self.push_screen(HelpScreen(live_keys(self.screen), pane_help))  # the keys of the screen it is on

    def action_next_theme(self) -> None:
        names = self.theme_names or [self.theme]
        k = names.index(self.theme) if self.theme in names else -1
        self.set_theme(names[(k + 1) % len(names)])

    def set_theme(self, name: str) -> None:
        self.theme = name
        self.notify(f"theme: {name}", timeout=2)

    def _on_theme_changed(self, theme) -> None:
        if self.main is not None and self.main.is_mounted:
            self.main.theme_changed()
        if self.remember_theme and theme.name != self._initial_theme:
            save_config({"theme": theme.name})

    async def action_quit(self) -> None:
        if self._follow_worker is not None:
            self._follow_worker.cancel()
        worker = self._engine_worker
        if self.session is not None and worker is not None and worker.state in (WorkerState.PENDING,
                                                                                WorkerState.RUNNING):
            self.stopping = True
            self.session.gate.cancel()
            self.update_state()
            deadline = time.monotonic() + QUIT_GRACE
            while not self.engine_done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.exit(0)

    def on_unmount(self) -> None:
        # However the app ends (ctrl+q goes through action_quit; a test's run_test or an error
        # may not), an engine left waiting at a gate must not outlive it: it stops as on a quit.
        if self.session is not None and self.engine_running:
            self.stopping = True
            self.session.gate.cancel()
            self.engine_done.wait(QUIT_GRACE)
        self._gc.stop()  # what this app froze can be collected again
        if self.feeder is not None:
            self.feeder.close()

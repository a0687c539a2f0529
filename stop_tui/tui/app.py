"""The Textual workbench: one thread worker runs the engine; the UI hears about it only
through posted messages carrying engine events, and renders everything from the event log."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App
from textual.worker import Worker, WorkerState

from stop_tui.engine.events import Event
from stop_tui.engine.resume import effective
from stop_tui.engine.store import SessionStore
from stop_tui.tui.commands import StopCommands
from stop_tui.tui.messages import EngineEvents, EventsReady, GateWaiting
from stop_tui.tui.model import SessionModel
from stop_tui.tui.screens.help import HelpScreen
from stop_tui.tui.screens.main import MainScreen
from stop_tui.tui.screens.picker import PickerScreen
from stop_tui.tui.theming import DEFAULT_THEME, discover_themes, load_config, save_config

if TYPE_CHECKING:
    from stop_tui.engine.session import Session

DRAIN_MAX = 2000  # events folded into the UI per message-loop turn
QUIT_GRACE = 2.0  # seconds the app waits for the engine to stop before leaving anyway


class _NoWaitExecutor(ThreadPoolExecutor):
    """The loop's default executor for the engine worker: shutting the app down does not
    wait for an LM call in flight (launch() decides how long to wait for it)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)


@dataclass
class ViewState:
    """What the main screen's panes read: the model and how to fetch texts."""

    model: SessionModel
    texts: Callable[[str | None], str | None]
    seed_solution: str | None
    session_dir: Path | None


def _seed_solution(task_name: str) -> str | None:
    try:
        from stop_tui.engine.tasks import load_task

        return load_task(task_name).seed
    except Exception:  # noqa: BLE001 - a missing task only loses the solution diffs
        return None


class StopApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "stop-tui"
    COMMANDS = App.COMMANDS | {StopCommands}
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, session: Session | None = None, *, store: SessionStore | None = None,
                 sessions_dir: Path | None = None, open_session_fn: Callable[[str], Session] | None = None,
                 engine: bool = True, theme: str | None = None, remember_theme: bool = True) -> None:
        super().__init__()
        self.session = session
        self.store = session.store if session is not None else store
        self.sessions_dir = sessions_dir
        self.open_session_fn = open_session_fn
        self.engine_on = engine and session is not None
        self.remember_theme = remember_theme
        self.view: ViewState | None = None
        self.main: MainScreen | None = None
        self._queue: deque[Event] = deque()
        self._pending = threading.Event()
        self._engine_worker: Worker | None = None
        self.engine_done = threading.Event()
        self.engine_outcome: str | None = None
        self.stopping = False
        self._waiting_at: str | None = None
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
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        if self.store is not None:
            self._open_store()
        elif self.sessions_dir is not None:
            self.push_screen(PickerScreen(self.sessions_dir), callback=self._picked)
        else:
            self.exit(2, message="no session to show")

    def _picked(self, session_id: str | None) -> None:
        if not session_id:
            self.exit(0)
            return
        try:
            assert self.open_session_fn is not None
            self.session = self.open_session_fn(session_id)
        except Exception as exc:  # noqa: BLE001 - show it, stay in the picker
            self.notify(f"cannot open {session_id}: {exc}", severity="error", timeout=8)
            self.push_screen(PickerScreen(self.sessions_dir), callback=self._picked)
            return
        self.store = self.session.store
        self.engine_on = True
        self._open_store()

    def _open_store(self) -> None:
        store = self.store
        assert store is not None
        if self.engine_on:
            store.subscribe(self._listener)  # before reading the log: nothing falls in between
            if self.session is not None:
                self.session.gate.on_wait = lambda point: self.post_message(GateWaiting(point))
        meta = store.meta()
        model = SessionModel(meta, store.id)
        model.ingest_all(effective(store.events()))
        model.take_changes()
        self.view = ViewState(model, store.text, _seed_solution(model.task), store.folder)
        self.main = MainScreen(self.view)
        self.push_screen(self.main)
        self.update_state()
        if self.engine_on and model.state != "finished":
            if self.session is not None:  # the worst case of what is left, before anything is spent
                from stop_tui.engine.lm.caps import engine_projection

                engine = self.session.engine
                self.notify(engine_projection(engine, engine.settings.iterations),
                            title="Worst case", timeout=10)
            self.start_engine()

    # -- the engine worker ---------------------------------------------------------------
    def start_engine(self) -> None:
        if self._engine_worker is not None and self._engine_worker.state in (WorkerState.PENDING,
                                                                             WorkerState.RUNNING):
            return
        loop = asyncio.get_running_loop()
        loop.set_default_executor(_NoWaitExecutor(max_workers=2, thread_name_prefix="stop-tui"))
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
        """Called in engine threads after each commit: queue it, wake the app once per burst."""
        self._queue.append(event)
        if not self._pending.is_set():
            self._pending.set()
            self.post_message(EventsReady())

    def on_events_ready(self, _: EventsReady) -> None:
        self._pending.clear()
        self.drain()

    def drain(self) -> None:
        """Fold queued events in, at most DRAIN_MAX per turn so keys stay responsive under a
        flood; the rest is picked up by the next turn of the message loop."""
        batch: list[Event] = []
        while self._queue and len(batch) < DRAIN_MAX:
            batch.append(self._queue.popleft())
        if batch:
            self.inject(batch)
        if self._queue and not self._pending.is_set():
            self._pending.set()
            self.post_message(EventsReady())

    def on_engine_events(self, message: EngineEvents) -> None:
        self.inject(message.events)

    def inject(self, events: Iterable[Event]) -> None:
        """Fold events into the model and update the panes once (also used by tests)."""
        if self.view is None:
            return
        model = self.view.model
        for event in events:
            model.ingest(event)
        added, changed, reset, log_lines = model.take_changes()
        if self.main is not None and self.main.is_mounted:
            self.main.apply_changes(added, changed, reset, log_lines)
        self.update_state()

    def on_gate_waiting(self, message: GateWaiting) -> None:
        self._waiting_at = message.point
        self.update_state()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "engine":
            return
        if event.state == WorkerState.SUCCESS:
            self.engine_outcome = event.worker.result
        elif event.state == WorkerState.ERROR:
            self.engine_outcome = "error"
            self.notify(f"the engine stopped: {event.worker.error}", severity="error", timeout=15)
        self.drain()
        self.update_state()

    # -- state ----------------------------------------------------------------------------
    def state(self) -> tuple[str, str]:
        if self.view is None:
            return "new", ""
        model = self.view.model
        if model.state == "finished":
            return "finished", ""
        if self.stopping:
            return "stopping", "finishing the work in flight"
        if not self.engine_on or self.session is None:
            return "viewing", "engine off"
        worker = self._engine_worker
        if worker is None or worker.state not in (WorkerState.PENDING, WorkerState.RUNNING):
            if self.engine_outcome == "error":
                return "paused", "the engine failed (see the notification); r retries"
            if model.state == "paused" and model.pause_reason:
                return "paused", model.pause_reason
            return "paused", "r runs, space steps"
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

            self.main.query_one(SessionHeader).set_state(*self.state())

    # -- actions --------------------------------------------------------------------------
    def _can_drive(self) -> bool:
        if self.view is None:
            return False
        if self.view.model.state == "finished":
            self.notify("This session is finished.", severity="information")
            return False
        if not self.engine_on or self.session is None:
            self.notify("The engine is off: this view replays the session's log.", severity="warning")
            return False
        if self.stopping:
            return False
        return True

    def action_step_iteration(self) -> None:
        if self._can_drive():
            self.session.gate.step_iteration()
            self._waiting_at = None
            self.start_engine()
            self.update_state()

    def action_step_call(self) -> None:
        if self._can_drive():
            self.session.gate.step_call()
            self._waiting_at = None
            self.start_engine()
            self.update_state()

    def action_toggle_run(self) -> None:
        if self._can_drive():
            gate = self.session.gate
            if gate.mode == "run":
                gate.pause()
            else:
                gate.run()
                self._waiting_at = None
            self.start_engine()
            self.update_state()

    def screen_action(self, name: str) -> None:
        if self.main is not None:
            getattr(self.main, f"action_{name}")()

    def action_help(self) -> None:
        focused = self.focused
        pane_help = None
        node = focused
        while node is not None and pane_help is None:
            pane_help = getattr(type(node), "HELP", None) if type(node).__module__.startswith("stop_tui") else None
            node = node.parent
        self.push_screen(HelpScreen(pane_help))

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
        worker = self._engine_worker
        if self.session is not None and worker is not None and worker.state in (WorkerState.PENDING,
                                                                                WorkerState.RUNNING):
            self.stopping = True
            self.session.gate.cancel()
            self.update_state()
            deadline = time.monotonic() + QUIT_GRACE
            while not self.engine_done.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.drain()
        self.exit(0)

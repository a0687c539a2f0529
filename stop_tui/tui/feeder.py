"""The feeder: one thread owns the session's SessionModel, folds into it everything the UI is
told (the log read when a session opens, a live engine's events, a followed session's new
events and meta) and hands the UI immutable snapshots of it (no Textual here).

The UI thread only draws snapshots. At most one snapshot waits for the UI at a time and live
ones come at most every MIN_INTERVAL seconds, so a flood of events costs the UI a few redraws
a second, not one per event; a snapshot carries everything that changed since the previous.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from stop_tui.engine.events import LM_REPLY, Event
from stop_tui.engine.resume import effective
from stop_tui.tui.model import SessionModel, Snapshot

LOAD_CHUNK = 5000  # events of the opening read folded in between two snapshots
MIN_INTERVAL = 0.1  # seconds between two live snapshots, at the least (10 a second)
# A live snapshot costs the UI thread its drawing (and both threads share one GIL): the next
# is posted no sooner than DRAW_SPACING times the last one took from posting to drawn, so
# under a heavy feed the UI spends most of its time on keys, not on redraws.
DRAW_SPACING = 10.0
MAX_INTERVAL = 1.0
# ...but once the feed pauses this long (the engine waits at a gate, a call is in flight), what
# has come in is drawn at once.
QUIET = 0.05


class Feeder:
    """`on_snapshot(snapshot)` is called from the feeder's thread; the UI calls `took(snapshot)`
    once it has drawn it. `meta()` (optional) reads the session's meta, which the LM layer
    writes while running: read again after LM replies, until it says the temperature is fixed.
    `on_message(m)` posts what `post_after` was given, after every snapshot before it."""

    def __init__(self, model: SessionModel, on_snapshot: Callable[[Snapshot], None], *,
                 on_message: Callable[[Any], None] | None = None,
                 meta: Callable[[], dict[str, Any]] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.model = model
        self._on_snapshot = on_snapshot
        self._on_message = on_message
        self._on_error = on_error
        self._meta = meta
        self._cond = threading.Condition()
        self._inbox: deque[tuple[str, Any]] = deque()
        self._waiting_idle = False  # the thread sleeps until something arrives
        self._busy = False
        self._closed = False
        self._ready = True  # the UI has taken the last snapshot
        self._loading = False
        self._last_post = 0.0
        self._spacing = MIN_INTERVAL
        self._last_in = 0.0  # when the last item came in
        self.posted = 0
        self.taken = 0
        self.loaded = threading.Event()  # the opening read is folded in (or there was none)
        self.loaded_after = 0  # the seq of the last event the opening read saw
        self._thread = threading.Thread(target=self._run, name="stop-tui-feeder", daemon=True)

    # -- from any thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def load(self, read: Callable[[], Iterable[Event]]) -> None:
        """Read the log (`read()`, in the feeder's thread) and fold in what counts of it."""
        self.loaded.clear()
        self._put("load", read, wake=True)

    def read(self, events: Callable[[], Iterable[Event]]) -> None:
        """Fold in `events()`, called in the feeder's thread (a store read, kept off the UI's)."""
        self._put("read", events, wake=True)

    def put(self, events: Iterable[Event]) -> None:
        self._put("events", tuple(events))

    def put_event(self, event: Event) -> None:
        """A store listener: called in the appending thread after each commit."""
        self._put("event", event)

    def put_meta(self, meta: dict[str, Any]) -> None:
        self._put("meta", meta, wake=True)

    def post_after(self, message: Any) -> None:
        """Post `message` once everything given before it is in a snapshot the UI was sent."""
        self._put("message", message, wake=True)

    def took(self, snapshot: Snapshot) -> None:
        with self._cond:
            self.taken = max(self.taken, snapshot.number)
            self._ready = self.taken >= self.posted
            if self._ready:
                took = time.monotonic() - self._last_post
                self._spacing = min(MAX_INTERVAL, max(MIN_INTERVAL, DRAW_SPACING * took))
            self._cond.notify()

    def idle(self) -> bool:
        """Everything given so far is folded in and the UI has taken the snapshot showing it."""
        with self._cond:
            return (self.loaded.is_set() and not self._inbox and not self._busy
                    and not self.model.has_changes() and self.taken >= self.posted)

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _put(self, kind: str, item: Any, *, wake: bool = False) -> None:
        with self._cond:
            self._inbox.append((kind, item))
            self._last_in = time.monotonic()
            if wake or self._waiting_idle:
                self._cond.notify()

    # -- the feeder's thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._inbox:
                    if self.model.has_changes() and self._ready:
                        remaining = self._due() - time.monotonic()
                        if remaining <= 0:
                            break
                        self._waiting_idle = False
                        self._cond.wait(remaining)
                    else:
                        self._waiting_idle = True
                        self._cond.wait()
                self._waiting_idle = False
                if self._closed:
                    return
                items = list(self._inbox)
                self._inbox.clear()
                self._busy = True
            try:
                for kind, item in items:
                    self._handle(kind, item)
                if self.model.has_changes() and self._ready and \
                        time.monotonic() >= self._due():
                    self._emit()
            except Exception as exc:  # noqa: BLE001 - shown by the UI; the thread goes on
                self.loaded.set()
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False

    def _due(self) -> float:
        """When the next live snapshot goes out: spaced while the feed goes on, at once when it
        pauses."""
        return min(self._last_post + self._spacing, max(self._last_post + MIN_INTERVAL, self._last_in + QUIET))

    def _handle(self, kind: str, item: Any) -> None:
        model = self.model
        if kind == "event":
            model.ingest(item)
            self._after_reply((item,))
        elif kind in ("events", "read"):
            events = tuple(item()) if kind == "read" else item
            model.ingest_all(events)
            self._after_reply(events)
        elif kind == "meta":
            model.apply_meta(item)
        elif kind == "message":
            if model.has_changes():
                self._emit()
            if self._on_message is not None:
                self._on_message(item)
        elif kind == "load":
            self._load(item)

    def _load(self, read: Callable[[], Iterable[Event]]) -> None:
        """The opening read: the panes are drawn whole from each snapshot while it lasts (the
        first after LOAD_CHUNK events), and once more when it is done."""
        events = list(read())
        self.loaded_after = events[-1].seq if events else 0
        kept = effective(events)
        self._loading = True
        try:
            for k in range(0, len(kept), LOAD_CHUNK):
                self.model.ingest_all(kept[k:k + LOAD_CHUNK])
                if k + LOAD_CHUNK < len(kept) and (self._ready or self.posted == 0):
                    self._emit(full=True)
        finally:
            self._loading = False
        self._emit(full=True)
        self.loaded.set()

    def _after_reply(self, events: Iterable[Event]) -> None:
        if self._meta is None or self.model.fixed_temperature:
            return
        if any(e.kind == LM_REPLY for e in events):
            self.model.apply_meta(self._meta())  # the LM service records what it learns there

    def _emit(self, *, full: bool = False) -> None:
        with self._cond:
            self.posted += 1
            number = self.posted
            self._ready = False
            self._last_post = time.monotonic()
        snapshot = self.model.snapshot(number, loading=self._loading, full=full)
        self._on_snapshot(snapshot)

"""Following a session another process runs: who holds it, and its log read as it grows.

No Textual here: the app polls a `Follower` from a thread worker and posts what it finds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.engine.events import Event
from stop_tui.engine.lock import holder
from stop_tui.engine.store import DB_NAME, SessionStore

POLL_SECONDS = 0.3  # how often the log and the lock are looked at
SINCE_FORMAT = "%Y-%m-%d %H:%M:%S UTC"  # engine/lock.py's label


@dataclass(frozen=True)
class Holder:
    """The process that runs a session (from its lock file)."""

    pid: int | None
    host: str
    since: str  # as recorded

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Holder | None:
        if record is None:
            return None  # held without a label ({}) is still held
        pid = record.get("pid")
        return cls(pid if isinstance(pid, int) else None, str(record.get("host") or "?"),
                   str(record.get("since") or ""))

    @property
    def who(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host}"

    @property
    def since_label(self) -> str:
        """`since` (as the lock records it: "2026-12-01 23:50:02 UTC") shortened for a one-line
        header: the time of day when it is today, else the date and time."""
        try:
            when = datetime.strptime(self.since, SINCE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return self.since
        today = when.date() == datetime.now(UTC).date()
        return when.strftime("%H:%M:%S UTC" if today else "%Y-%m-%d %H:%M UTC")

    def describe(self) -> str:
        since = self.since_label
        return f"run by {self.who}" + (f" since {since}" if since else "")


def current_holder(folder: Path) -> Holder | None:
    return Holder.from_record(holder(Path(folder)))


@dataclass(frozen=True)
class Poll:
    """What one look at the session found."""

    holder: Holder | None
    events: tuple[Event, ...]  # committed since the previous look, in order
    meta: dict[str, Any]


class Follower:
    """Reads a session's folder without changing it, through its own read-only connection
    (shared by the polling thread and the UI thread for program texts).

    A read-only open of a session nobody writes is `immutable` (see SessionStore) and would
    never see a writer that starts later; the connection is made again whenever the writer's
    `-wal` file appears or goes, so every commit is seen."""

    def __init__(self, folder: Path, after: int) -> None:
        self.folder = Path(folder)
        self.after = after  # the last seq seen
        self._guard = threading.Lock()
        self._closed = False
        self._wal = self._wal_exists()
        self._store = SessionStore(self.folder, readonly=True)

    def _wal_exists(self) -> bool:
        return (self.folder / (DB_NAME + "-wal")).exists()

    def _current(self) -> SessionStore:
        wal = self._wal_exists()
        if wal != self._wal:
            self._store.close()
            self._store = SessionStore(self.folder, readonly=True)
            self._wal = wal
        return self._store

    def poll(self) -> Poll:
        # The holder first: once it is gone, the events read after it include its last ones.
        who = current_holder(self.folder)
        with self._guard:
            if self._closed:
                return Poll(who, (), {})
            store = self._current()
            events = tuple(store.events(after=self.after))
            meta = store.meta()
        if events:
            self.after = events[-1].seq
        return Poll(who, events, meta)

    def text(self, digest: str | None) -> str | None:
        with self._guard:
            return None if self._closed else self._store.text(digest)

    def close(self) -> None:
        with self._guard:
            if not self._closed:
                self._closed = True
                self._store.close()

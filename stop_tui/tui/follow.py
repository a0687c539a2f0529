"""Following a session another process runs: who holds it, and its log read as it grows.

No Textual here: the app polls a `Follower` from a thread worker and posts what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from stop_tui.engine.events import Event
from stop_tui.engine.lock import holder
from stop_tui.engine.store import SessionStore

POLL_SECONDS = 0.3  # how often the log and the lock are looked at


@dataclass(frozen=True)
class Holder:
    """The process that runs a session (from its lock file)."""

    pid: int | None
    host: str
    since: str  # as recorded

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Holder | None:
        if not record:
            return None
        pid = record.get("pid")
        return cls(pid if isinstance(pid, int) else None, str(record.get("host") or "?"),
                   str(record.get("since") or ""))

    @property
    def who(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host}"

    @property
    def since_label(self) -> str:
        """`since` shortened for a one-line header: the time of day, or the date and time."""
        try:
            when = datetime.fromisoformat(self.since)
        except ValueError:
            return self.since
        now = datetime.now(when.tzinfo)
        return when.strftime("%H:%M:%S" if when.date() == now.date() else "%Y-%m-%d %H:%M")

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
    """Reads a session's folder without changing it: its own read-only connection, so the
    thread that polls shares nothing with the UI thread."""

    def __init__(self, folder: Path, after: int) -> None:
        self.folder = Path(folder)
        self.after = after  # the last seq seen
        self.store = SessionStore(self.folder, readonly=True)

    def poll(self) -> Poll:
        # The holder first: once it is gone, the events read after it include its last ones.
        who = current_holder(self.folder)
        events = tuple(self.store.events(after=self.after))
        if events:
            self.after = events[-1].seq
        return Poll(who, events, self.store.meta())

    def close(self) -> None:
        self.store.close()

"""The session store: one folder per session holding `session.db`, a SQLite database in WAL mode.

Tables: `meta` (settings, task, model, seed: never an API key), `events` (the append-only
log; each insert is its own transaction, so a `kill -9` loses at most the event in flight)
and `blobs` (program texts, prompts and replies by SHA-256 of their content).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.events import Event

DB_NAME = "session.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
CREATE TABLE IF NOT EXISTS blobs (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
"""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def default_sessions_dir() -> Path:
    return Path(os.environ.get("STOP_TUI_SESSIONS", "sessions"))


class SessionStore:
    """A session's database. Thread-safe: the engine appends from many threads."""

    def __init__(self, folder: Path, *, create: bool = False) -> None:
        self.folder = Path(folder)
        self.id = self.folder.name
        db = self.folder / DB_NAME
        if not create and not db.exists():
            raise UserError(f"no session at {self.folder} (see `stop-tui list`)")
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._listeners: list = []

    # -- creation and lookup ------------------------------------------------------------
    @classmethod
    def create(cls, sessions_dir: Path, meta: dict[str, Any], name: str | None = None) -> SessionStore:
        sessions_dir = Path(sessions_dir)
        try:
            sessions_dir.mkdir(parents=True, exist_ok=True)
            probe = sessions_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"sessions dir {sessions_dir} is not writable: {exc.strerror or exc}") from None
        label = Path(str(meta.get("task") or "run")).name or "run"  # a task folder path: its name
        base = name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + f"-{label}"
        folder, k = sessions_dir / base, 1
        while folder.exists():
            k += 1
            folder = sessions_dir / f"{base}-{k}"
        folder.mkdir()
        store = cls(folder, create=True)
        store.set_meta({**meta, "created": datetime.now(UTC).isoformat(timespec="seconds")})
        return store

    @classmethod
    def open(cls, sessions_dir: Path, session: str) -> SessionStore:
        path = Path(session)
        folder = path if (path / DB_NAME).exists() else Path(sessions_dir) / session
        return cls(folder)

    # -- meta -----------------------------------------------------------------------------
    def set_meta(self, meta: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            for key, value in meta.items():
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            self._conn.execute("COMMIT")

    def meta(self) -> dict[str, Any]:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    # -- blobs ----------------------------------------------------------------------------
    def put_text(self, text: str) -> str:
        """Store a text exactly, whatever it holds. A text from the sandbox or an LM may hold
        lone surrogates (a valid str that no encoding takes, so SQLite refuses it): such a
        text is kept as its surrogatepass UTF-8 bytes, and `text()` gives it back equal."""
        digest = content_hash(text)
        insert = "INSERT OR IGNORE INTO blobs VALUES (?, ?)"
        with self._lock:
            try:
                self._conn.execute(insert, (digest, text))
            except UnicodeEncodeError:
                self._conn.execute(insert, (digest, text.encode("utf-8", "surrogatepass")))
        return digest

    def text(self, digest: str | None) -> str | None:
        if digest is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT text FROM blobs WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            return None
        return row[0].decode("utf-8", "surrogatepass") if isinstance(row[0], bytes) else row[0]

    # -- events ---------------------------------------------------------------------------
    def subscribe(self, listener) -> None:
        """`listener(event)` is called (in the appending thread) after each commit."""
        self._listeners.append(listener)

    def append(self, event: Event) -> Event:
        payload = json.dumps(event.data, separators=(",", ":"))
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO events (t, kind, path, data) VALUES (?, ?, ?, ?)",
                (event.t, event.kind, event.path, payload),
            )
            committed = Event(event.kind, event.path, event.data, event.t, cur.lastrowid)
        for listener in list(self._listeners):
            listener(committed)
        return committed

    def events(self, after: int = 0, kinds: tuple[str, ...] = ()) -> Iterator[Event]:
        query = "SELECT seq, t, kind, path, data FROM events WHERE seq > ?"
        args: list[Any] = [after]
        if kinds:
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY seq", args).fetchall()
        for seq, t, kind, path, data in rows:
            yield Event(kind, path, json.loads(data), t, seq)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def list_sessions(sessions_dir: Path) -> list[Path]:
    sessions_dir = Path(sessions_dir)
    if not sessions_dir.is_dir():
        return []
    return sorted(p for p in sessions_dir.iterdir() if (p / DB_NAME).exists())

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


class SessionUnreadable(UserError):
    """The session's database is damaged or is not a session: `session ID is unreadable: reason`."""

    def __init__(self, session_id: str, reason: str) -> None:
        self.session_id, self.reason = session_id, reason
        super().__init__(f"session {session_id} is unreadable: {reason}")


class SessionStore:
    """A session's database. Thread-safe: the engine appends from many threads.

    `readonly=True` opens it without creating or changing any file (list, show, audit, a
    replay's source, the TUI's viewer of a session another process runs): SQLite `mode=ro`
    while a writer's `-wal` file exists (so new commits are seen as they land), and
    `immutable=1` when there is none (nobody writes it; a read-only `mode=ro` open would
    otherwise create `-wal` and `-shm` files). An existing session's schema and meta are
    checked on opening: a damaged one raises `SessionUnreadable`.
    """

    def __init__(self, folder: Path, *, create: bool = False, readonly: bool = False,
                 initial_meta: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.id = self.folder.name
        self.readonly = readonly
        db = self.folder / DB_NAME
        if not create and not db.exists():
            raise UserError(f"no session at {self.folder} (see `stop-tui list`)")
        if not create and not db.is_file():
            raise SessionUnreadable(self.id, f"{DB_NAME} is not a file")
        self._lock = threading.Lock()
        self._listeners: list = []
        try:
            if readonly:
                wal = db.with_name(DB_NAME + "-wal").exists()
                uri = db.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                self._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise SessionUnreadable(self.id, _reason(exc)) from None
        try:
            if create:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                # Schema and meta in one transaction: a reader never sees a session without a task.
                self._conn.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self._conn.execute(statement)
                for key, value in (initial_meta or {}).items():
                    self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
                self._conn.execute("COMMIT")
                return
            self._check()  # before anything could write to a damaged file
            if not readonly:
                self._check_writable()
        except BaseException:
            self._conn.close()
            raise

    def _check(self) -> None:
        """A session database: its three tables, and meta that parses and names a task."""
        try:
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise SessionUnreadable(self.id, _reason(exc)) from None
        missing = [t for t in ("meta", "events", "blobs") if t not in tables]
        if missing:
            raise SessionUnreadable(self.id, "empty database (no session recorded)" if not tables
                                    else f"not a session database (no {', '.join(missing)} table)")
        meta = self.meta()
        if not isinstance(meta.get("task"), str) or not meta["task"]:
            raise SessionUnreadable(self.id, "no task recorded in its meta")
        for key, kind in (("settings", dict), ("model", str), ("kind", str), ("created", str)):
            if meta.get(key) is not None and not isinstance(meta[key], kind):
                raise SessionUnreadable(self.id, f"meta value {key!r} is not a {kind.__name__}")

    def _check_writable(self) -> None:
        """Another program's SQLite transaction would make every write wait, then fail."""
        self._conn.execute("PRAGMA busy_timeout = 1000")
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise UserError(_write_error(self.id, exc)) from None
        except sqlite3.DatabaseError as exc:
            raise SessionUnreadable(self.id, _reason(exc)) from None
        finally:
            self._conn.execute("PRAGMA busy_timeout = 5000")

    def _read(self, query: str, args: tuple | list = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._conn.execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise SessionUnreadable(self.id, _reason(exc)) from None

    def _write(self, query: str, args: tuple | list = ()) -> sqlite3.Cursor:
        """One statement under the caller's `self._lock`."""
        try:
            return self._conn.execute(query, args)
        except sqlite3.OperationalError as exc:
            raise UserError(_write_error(self.id, exc)) from None

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
        return cls(folder, create=True,
                   initial_meta={**meta, "created": datetime.now(UTC).isoformat(timespec="seconds")})

    @classmethod
    def open(cls, sessions_dir: Path, session: str, *, readonly: bool = False) -> SessionStore:
        return cls(session_folder(sessions_dir, session), readonly=readonly)

    # -- meta -----------------------------------------------------------------------------
    def set_meta(self, meta: dict[str, Any]) -> None:
        with self._lock:
            self._write("BEGIN IMMEDIATE")
            try:
                for key, value in meta.items():
                    self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._write("COMMIT")

    def meta(self) -> dict[str, Any]:
        meta = {}
        for key, value in self._read("SELECT key, value FROM meta"):
            try:
                meta[key] = json.loads(value)
            except (TypeError, ValueError):
                raise SessionUnreadable(self.id, f"meta value {key!r} is not JSON") from None
        return meta

    # -- blobs ----------------------------------------------------------------------------
    def put_text(self, text: str) -> str:
        digest = content_hash(text)
        with self._lock:
            self._write("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, text))
        return digest

    def text(self, digest: str | None) -> str | None:
        if digest is None:
            return None
        rows = self._read("SELECT text FROM blobs WHERE hash = ?", (digest,))
        return rows[0][0] if rows else None

    # -- events ---------------------------------------------------------------------------
    def subscribe(self, listener) -> None:
        """`listener(event)` is called (in the appending thread) after each commit."""
        self._listeners.append(listener)

    def append(self, event: Event) -> Event:
        payload = json.dumps(event.data, separators=(",", ":"))
        with self._lock:
            cur = self._write(
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
        for seq, t, kind, path, data in self._read(query + " ORDER BY seq", args):
            try:
                payload = json.loads(data)
            except (TypeError, ValueError):
                raise SessionUnreadable(self.id, f"event {seq} ({kind}) is not JSON") from None
            if not isinstance(payload, dict):
                raise SessionUnreadable(self.id, f"event {seq} ({kind}) is not a JSON object")
            yield Event(kind, path, payload, t, seq)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    return {"file is not a database": "not an SQLite database (damaged or not a session)",
            "database disk image is malformed": "the database is damaged (malformed)"}.get(text, text)


def _write_error(session_id: str, exc: sqlite3.OperationalError) -> str:
    if "locked" in str(exc) or "busy" in str(exc):
        return (f"session {session_id}'s database is locked by another program (an SQLite "
                "transaction holds it); close that program and try again")
    return f"cannot write session {session_id}: {exc}"


def session_folder(sessions_dir: Path, session: str) -> Path:
    """The folder of session `session` (an id in `sessions_dir`, or a session folder's path);
    raises UserError when there is no session there."""
    path = Path(session)
    folder = path if (path / DB_NAME).exists() else Path(sessions_dir) / session
    if not (folder / DB_NAME).exists():
        raise UserError(f"no session at {folder} (see `stop-tui list`)")
    return folder


def list_sessions(sessions_dir: Path) -> list[Path]:
    sessions_dir = Path(sessions_dir)
    if not sessions_dir.is_dir():
        return []
    return sorted(p for p in sessions_dir.iterdir() if (p / DB_NAME).exists())

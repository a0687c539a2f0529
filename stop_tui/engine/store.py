"""The session store: one folder per session holding `session.db`, a SQLite database in WAL mode.

Tables: `meta` (settings, task, model, seed: never an API key), `events` (the append-only
log; each insert is its own transaction, so a `kill -9` loses at most the event in flight)
and `blobs` (program texts, prompts and replies by SHA-256 of their content).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sqlite3
import tempfile
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

    def __init__(self, folder: Path, *, readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.id = self.folder.name
        self.readonly = readonly
        db = self.folder / DB_NAME
        if not db.exists():
            raise UserError(f"no session at {self.folder} (see `stop-tui list`)")
        if not db.is_file():
            raise SessionUnreadable(self.id, f"{DB_NAME} is not a file")
        self._lock = threading.Lock()
        self._listeners: list = []
        try:
            if readonly:
                wal = db.with_name(DB_NAME + "-wal").exists()
                uri = db.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
                # A reader never waits on a WAL writer; only a foreign exclusive lock holds it up.
                self._conn = sqlite3.connect(uri, uri=True, timeout=2.0, check_same_thread=False,
                                             isolation_level=None)
            else:
                self._conn = sqlite3.connect(db, timeout=2.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise _read_error(self.id, exc) from None
        try:
            self._check()  # before anything could write to a damaged file
            if not readonly:
                self._check_writable()
        except BaseException:
            self._conn.close()
            raise

    def _check(self) -> None:
        """A session database: whole, its three tables, and meta that parses and names a task."""
        _check_length(self.id, self.folder / DB_NAME)
        try:
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise _read_error(self.id, exc) from None
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

    def verify(self) -> None:
        """Read the whole log (SessionUnreadable at a damaged row): before a command builds on it."""
        for _ in self.events():
            pass

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
            raise _read_error(self.id, exc) from None
        finally:
            self._conn.execute("PRAGMA busy_timeout = 5000")

    def _read(self, query: str, args: tuple | list = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._conn.execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _read_error(self.id, exc) from None

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
        if sessions_dir.exists() and not sessions_dir.is_dir():
            raise UserError(f"sessions dir {sessions_dir} is not a folder")
        try:
            sessions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"sessions dir {sessions_dir} does not exist and cannot be created: "
                            f"{exc.strerror or exc}") from None
        try:  # a probe of its own: a sweep's runs create their sessions here at once
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=sessions_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UserError(f"sessions dir {sessions_dir} is not writable: {exc.strerror or exc}") from None
        label = Path(str(meta.get("task") or "run")).name or "run"  # a task folder path: its name
        base = name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + f"-{label}"
        folder, k = sessions_dir / base, 1
        while folder.exists():
            k += 1
            folder = sessions_dir / f"{base}-{k}"
        folder.mkdir()
        # Written whole under another name, then renamed: a session.db that exists has its
        # schema and meta (a kill -9 here leaves no half-made session, only this folder).
        draft = folder / (DB_NAME + ".new")
        con = sqlite3.connect(draft, isolation_level=None)
        try:
            con.execute("BEGIN")
            for statement in filter(str.strip, SCHEMA.split(";")):
                con.execute(statement)
            created = {**meta, "created": datetime.now(UTC).isoformat(timespec="seconds")}
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(key, json.dumps(value)) for key, value in created.items()])
            con.execute("COMMIT")
        finally:
            con.close()
        os.replace(draft, folder / DB_NAME)
        return cls(folder)

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
        """Store a text exactly, whatever it holds. A text from the sandbox or an LM may hold
        lone surrogates (a valid str that no encoding takes, so SQLite refuses it): such a
        text is kept as its surrogatepass UTF-8 bytes, and `text()` gives it back equal."""
        digest = content_hash(text)
        insert = "INSERT OR IGNORE INTO blobs VALUES (?, ?)"
        with self._lock:
            try:
                self._write(insert, (digest, text))
            except UnicodeEncodeError:
                self._write(insert, (digest, text.encode("utf-8", "surrogatepass")))
        return digest

    def text(self, digest: str | None) -> str | None:
        if digest is None:
            return None
        rows = self._read("SELECT text FROM blobs WHERE hash = ?", (digest,))
        if not rows:
            return None
        value = rows[0][0]
        return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value

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


def _check_length(session_id: str, db: Path) -> None:
    """A file cut short (a copy that stopped, a full disk) reads as whole to SQLite until a
    query reaches a missing page. With no -wal file the header's page count is the file's size."""
    if db.with_name(DB_NAME + "-wal").exists():
        return
    try:
        with open(db, "rb") as f:
            header = f.read(100)
        size = db.stat().st_size
    except OSError as exc:
        raise SessionUnreadable(session_id, exc.strerror or str(exc)) from None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return  # empty, or not SQLite at all: the open says which
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the header's page count is current
    if valid and pages and size < pages * page_size:
        raise SessionUnreadable(session_id, f"truncated ({size} of {pages * page_size} bytes)")


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    return {"file is not a database": "not an SQLite database (damaged or not a session)",
            "database disk image is malformed": "the database is damaged (malformed)"}.get(text, text)


def _locked(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _locked_message(session_id: str) -> str:
    return (f"session {session_id}'s database is locked by another program (an SQLite "
            "transaction holds it); close that program and try again")


def _read_error(session_id: str, exc: sqlite3.Error) -> UserError:
    return UserError(_locked_message(session_id)) if _locked(exc) else SessionUnreadable(session_id, _reason(exc))


def _write_error(session_id: str, exc: sqlite3.OperationalError) -> str:
    return _locked_message(session_id) if _locked(exc) else f"cannot write session {session_id}: {exc}"


def cli_name(folder: Path) -> str:
    """How a command line names the session in `folder`: its id, followed by `--sessions-dir
    DIR` when DIR is not the default, so that a printed hint works when pasted."""
    folder = Path(folder)
    parent = folder.parent
    if parent.resolve() == default_sessions_dir().resolve():
        return shlex.quote(folder.name)
    return f"{shlex.quote(folder.name)} --sessions-dir {shlex.quote(str(parent))}"


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

"""One writer per session: the process that runs a session holds an OS lock on `<session>/lock`.

The lock is `flock(LOCK_EX | LOCK_NB)` on an open file, so the kernel releases it when the
holder ends in any way (exit, crash, `kill -9`). After locking, the holder writes who it is
({pid, host, since}) into the file; `holder()` reads that back for a watcher, and a second
process that tries to run the session gets `SessionBusy` naming the holder.

Readers (list, show, audit, the TUI's viewer) never take the lock and never create the file.
A child forked by the holder does not keep the lock alive: the descriptor is closed in every
forked child, so the lock ends with the process that took it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import UserError

LOCK_NAME = "lock"
# A reader's `holder()` probe holds a shared lock for a moment; acquiring retries this long
# before it concludes that another process really runs the session.
_ACQUIRE_PATIENCE_S = 0.5

_held: dict[int, SessionLock] = {}  # fd -> lock, closed in forked children
_held_guard = threading.Lock()


class SessionBusy(UserError):
    """Another process runs this session (holds its lock)."""

    def __init__(self, folder: Path, info: dict[str, Any] | None) -> None:
        self.folder = Path(folder)
        self.info = info
        super().__init__(f"session {self.folder.name} is being run by another process ({describe(info)})")


def describe(info: dict[str, Any] | None) -> str:
    """'pid 123 on host, since 2026-12-01 23:50:02 UTC' (or what is known of it)."""
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')}"


class SessionLock:
    """The held lock on one session folder. `release()` (idempotent) lets another process in."""

    def __init__(self, folder: Path, fd: int, info: dict[str, Any]) -> None:
        self.folder = folder
        self.info = info
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with _held_guard:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            _held.pop(fd, None)
        try:
            os.ftruncate(fd, 0)  # nobody holds it now (a kill -9 leaves stale text: see holder())
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(folder: Path) -> SessionLock:
    """Take the session's lock or raise `SessionBusy` naming the process that holds it."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"cannot lock session {folder.name}: {path}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + _ACQUIRE_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise UserError(f"cannot lock session {folder.name}: {exc.strerror or exc}") from None
            if time.monotonic() >= deadline:
                info = _read_info(fd)
                os.close(fd)
                raise SessionBusy(folder, info) from None
            time.sleep(0.02)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:
        pass  # the lock holds without its label (e.g. disk full); holder() then says "unknown"
    lock = SessionLock(folder, fd, info)
    with _held_guard:
        _held[fd] = lock
    return lock


def holder(folder: Path) -> dict[str, Any] | None:
    """Who runs the session now ({pid, host, since}), or None when nobody does.

    Creates nothing: a session without a lock file has never been run under a lock."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_info(fd) or {}
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: whatever text is there is from a killed holder
        return None
    finally:
        os.close(fd)


def _read_info(fd: int) -> dict[str, Any] | None:
    for _ in range(5):  # the holder writes its label just after locking
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            return None
        if text:
            try:
                info = json.loads(text)
            except ValueError:
                return None
            return info if isinstance(info, dict) else None
        time.sleep(0.02)
    return None


def _close_in_child() -> None:
    # A forked child shares the open file description, so the lock would outlive a killed
    # holder for as long as the child lives. Closing the child's copy leaves the parent's lock.
    for fd, lock in list(_held.items()):
        lock._fd = None
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)

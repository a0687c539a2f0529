"""One writer per session (engine/lock.py) and read-only opens of the store.

The lock tests use real processes: a holder in a child process, `kill -9` of it, a child the
holder forked. The read-only tests compare a session folder's files before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from stop_tui.engine import events as ev
from stop_tui.engine.lock import LOCK_NAME, SessionBusy, acquire, holder
from stop_tui.engine.store import SCHEMA, SessionStore, SessionUnreadable

ROOT = Path(__file__).resolve().parent.parent

HOLD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from stop_tui.engine.lock import acquire
    lock = acquire(Path(sys.argv[1]))
    if len(sys.argv) > 2:  # fork a child that outlives us (like a worker process)
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    print("held", flush=True)
    time.sleep(60)
""")


def hold(folder: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *extra], stdout=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def finished_session(sessions_dir: Path) -> SessionStore:
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": "scripted", "settings": {}})
    store.append(ev.Event(ev.SESSION_STARTED, "", {"task": "lpn"}))
    store.put_text("def improve_algorithm(): ...")
    return store


# -- the lock -------------------------------------------------------------------------------
def test_a_second_process_is_refused_with_the_holder_named(tmp_path):
    proc = hold(tmp_path)
    try:
        info = holder(tmp_path)
        assert info is not None and info["pid"] == proc.pid and info["host"] == socket.gethostname()
        with pytest.raises(SessionBusy) as caught:
            acquire(tmp_path)
        message = str(caught.value)
        assert f"pid {proc.pid} on {socket.gethostname()}, since {info['since']}" in message
        assert "\n" not in message
    finally:
        kill9(proc)


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    proc = hold(tmp_path)
    kill9(proc)
    assert (tmp_path / LOCK_NAME).read_text()  # the killed holder's label is still there...
    assert holder(tmp_path) is None  # ...but the kernel released its lock
    lock = acquire(tmp_path)
    assert holder(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert holder(tmp_path) is None


def test_a_child_forked_by_the_holder_does_not_keep_the_lock(tmp_path):
    proc = hold(tmp_path, "fork")
    kill9(proc)  # the forked child (same process group) is still alive
    try:
        children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the forked child should still be running"
        assert holder(tmp_path) is None
        acquire(tmp_path).release()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_release_lets_the_next_writer_in_and_is_idempotent(tmp_path):
    lock = acquire(tmp_path)
    with pytest.raises(SessionBusy):  # another open file, even in this process
        acquire(tmp_path)
    lock.release()
    lock.release()
    with acquire(tmp_path) as again:
        assert again.held
    assert not again.held


def test_holder_reads_without_creating_anything(tmp_path):
    assert holder(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_holder_probes_do_not_make_acquire_fail(tmp_path):
    """A watcher polling holder() takes a shared lock for an instant; a writer starting at the
    same moment must still get the session."""
    acquire(tmp_path).release()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    poller = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pathlib import Path
        from stop_tui.engine.lock import holder
        while True:
            holder(Path(sys.argv[1]))
    """), str(tmp_path)], env=env)
    try:
        time.sleep(0.3)
        for _ in range(50):
            acquire(tmp_path).release()
    finally:
        poller.kill()
        poller.wait()


# -- read-only opens ------------------------------------------------------------------------
def test_readonly_open_of_a_finished_session_changes_no_file(tmp_path):
    store = finished_session(tmp_path)
    folder = store.folder
    store.close()
    before = snapshot(folder)
    assert set(before) == {"session.db"}  # the writer's -wal and -shm are gone after close
    time.sleep(0.01)
    reader = SessionStore(folder, readonly=True)
    assert reader.meta()["task"] == "lpn"
    assert [e.kind for e in reader.events()] == [ev.SESSION_STARTED]
    reader.close()
    again = SessionStore.open(tmp_path, folder.name, readonly=True)
    assert again.meta()["model"] == "scripted"
    again.close()
    assert snapshot(folder) == before


def test_readonly_open_refuses_writes(tmp_path):
    store = finished_session(tmp_path)
    store.close()
    reader = SessionStore(store.folder, readonly=True)
    with pytest.raises(Exception):  # noqa: B017 - any refusal; the point is nothing is written
        reader.append(ev.Event(ev.PAUSED, "", {}))
    reader.close()


def test_readonly_reader_follows_a_live_writer(tmp_path):
    """The TUI's viewer: while another store writes, a read-only store sees each commit."""
    writer = finished_session(tmp_path)
    reader = SessionStore(writer.folder, readonly=True)
    names = {p.name for p in writer.folder.iterdir()}
    try:
        last = max(e.seq for e in reader.events())
        writer.append(ev.Event(ev.PAUSED, "", {"reason": "cap"}))
        new = list(reader.events(after=last))
        assert [e.kind for e in new] == [ev.PAUSED]
    finally:
        reader.close()
        writer.close()
    assert names == {"session.db", "session.db-wal", "session.db-shm"}  # the writer's, not ours


def test_readonly_open_works_on_a_read_only_mount(tmp_path):
    """Genuinely read-only (a read-only bind mount: root ignores chmod): the reader opens a
    session and reads it; nothing could be written there."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    store = finished_session(tmp_path / "sessions")
    store.close()
    folder = store.folder
    script = tmp_path / "read.py"
    script.write_text(textwrap.dedent("""
        import sys
        from pathlib import Path
        from stop_tui.engine.store import SessionStore
        s = SessionStore(Path(sys.argv[1]), readonly=True)
        print(s.meta()["task"], len(list(s.events())))
        try:
            open(Path(sys.argv[1]) / "probe", "w")
        except OSError as exc:
            print("write refused:", exc.strerror)
    """))
    mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && "$2" "$3" "$1"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", str(folder), sys.executable, str(script)],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    if "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["lpn 1", "write refused: Read-only file system"]


@pytest.mark.parametrize("damage", ["zero bytes", "empty schema", "random bytes", "directory"])
def test_a_damaged_database_is_unreadable_and_left_as_it_was(tmp_path, damage):
    folder = tmp_path / "S"
    folder.mkdir()
    db = folder / "session.db"
    if damage == "zero bytes":
        db.write_bytes(b"")
    elif damage == "empty schema":
        sqlite3.connect(db).executescript(SCHEMA)
    elif damage == "random bytes":
        db.write_bytes(os.urandom(8192))
    else:
        db.mkdir()
    before = snapshot(folder)
    for readonly in (True, False):
        with pytest.raises(SessionUnreadable, match=r"^session S is unreadable: "):
            SessionStore(folder, readonly=readonly)
    assert snapshot(folder) == before


# -- through the CLI: two real `stop-tui` processes ------------------------------------------
@pytest.mark.slow
def test_a_second_run_of_a_running_session_is_refused_until_the_holder_is_killed(tmp_path):
    from lm_helpers import kill9 as kill_group
    from lm_helpers import responder, run_args, start, stop_tui, wait_for
    from scripted_server import ScriptedLMServer

    sessions_dir = tmp_path / "sessions"
    gate = threading.Event()  # the first run waits in its first LM call until the test is done

    def held(body, i):
        gate.wait(120)
        return responder(body, i)

    with ScriptedLMServer(held, honour_n=False) as server:
        first = start(*run_args(server, sessions_dir, "--quiet"))
        try:
            assert wait_for(lambda: sessions_dir.is_dir() and any(sessions_dir.iterdir())
                            and server.requests, timeout=120)
            folder = next(sessions_dir.iterdir())
            info = holder(folder)
            assert info is not None and info["pid"] == first.pid
            sent = len(server.requests)
            expected = f"pid {first.pid} on {socket.gethostname()}, since {info['since']}"
            for args in (["run", "--resume", folder.name], ["baseline", "--method", "cot", "--session", folder.name],
                         ["run", "--resume", folder.name, "--max-calls", "100"]):
                proc = stop_tui(*args, "--sessions-dir", str(sessions_dir), timeout=120)
                assert proc.returncode == 2, proc.stderr
                lines = proc.stderr.strip().splitlines()
                assert lines == [f"stop-tui: error: session {folder.name} is being run by another process "
                                 f"({expected})"], proc.stderr
            assert not (folder / "baselines").exists()
            # Readers never take the lock: show works while it runs.
            shown = stop_tui("show", folder.name, "--sessions-dir", str(sessions_dir))
            assert shown.returncode == 0 and folder.name in shown.stdout, shown.stderr
            assert f"run by    {expected} (another process is running it now)" in shown.stdout
            assert json.loads(stop_tui("show", folder.name, "--json", "--sessions-dir", str(sessions_dir)).stdout
                              )["holder"] == info
            assert first.poll() is None  # still running: the refusals changed nothing for it
            assert len(server.requests) >= sent
        finally:
            kill_group(first)
        assert holder(folder) is None  # kill -9: the kernel freed the lock
        gate.set()
        resumed = stop_tui("run", "--resume", folder.name, "--sessions-dir", str(sessions_dir), "--json", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "finished"
    assert holder(folder) is None  # released when the run ended
    assert json.loads(stop_tui("show", folder.name, "--json", "--sessions-dir", str(sessions_dir)).stdout
                      )["holder"] is None


def test_a_session_is_created_whole_or_not_at_all(tmp_path):
    """The database is written under a draft name and renamed once its schema and meta are in:
    a process killed while creating leaves no half-made session for `list` or `--resume`."""
    from stop_tui.engine.store import list_sessions

    store = finished_session(tmp_path)
    assert not (store.folder / "session.db.new").exists()
    store.close()
    killed = tmp_path / "killed-while-creating"
    killed.mkdir()
    (killed / "session.db.new").write_bytes(b"")
    assert list_sessions(tmp_path) == [store.folder]
    reader = SessionStore(store.folder, readonly=True)
    assert reader.meta()["task"] == "lpn" and reader.meta()["created"]
    reader.close()

"""Damaged sessions, read-only opens and a foreign SQLite writer, through the real CLI.

Every command that opens a session says `session ID is unreadable: reason` (exit 2) for a
damaged one and leaves its files exactly as they were; `list` lists it as unreadable beside the
others. Read-only commands create and change nothing, in a writable folder and on a read-only
mount.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, stop_tui

from stop_tui.engine import events as ev
from stop_tui.engine.settings import preset
from stop_tui.engine.store import SessionStore

BROKEN = ("zero bytes", "empty schema", "truncated", "random bytes", "directory", "bad event row",
          "bad meta value")
# (command line with S for the session, whether it may use the network: never reached)
COMMANDS = {
    "show": ["show", "S"],
    "show --json": ["show", "S", "--json"],
    "audit": ["audit", "S"],
    "report": ["report", "S"],
    "replay": ["replay", "S"],
    "run --resume": ["run", "--resume", "S"],
    "resume": ["resume", "S"],
    "baseline --session": ["baseline", "--method", "cot", "--session", "S"],
    "transfer --improver": ["transfer", "--improver", "S", "--tasks", "lpn"],
    "transfer --resume": ["transfer", "--resume", "S"],
    "run --model replay:": ["run", "--model", "replay:S"],
    "new --model replay:": ["new", "--model", "replay:S"],
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def good_session(sessions_dir: Path, name: str) -> Path:
    """A small finished-looking session with events and blobs over several database pages."""
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": "scripted",
                                               "settings": preset("quick").to_dict()}, name=name)
    store.append(ev.Event(ev.SESSION_STARTED, "", {"task": "lpn", "model": "scripted"}))
    for i in range(40):
        digest = store.put_text(f"# program {i}\n" + "x = 1\n" * 200)
        store.append(ev.Event(ev.CANDIDATE_PROPOSED, f"i{i}", {"source": digest, "role": "candidate"}))
    store.close()
    return store.folder


def break_session(sessions_dir: Path, kind: str) -> Path:
    folder = sessions_dir / "S"
    db = folder / "session.db"
    if kind in ("truncated", "bad event row", "bad meta value"):
        good_session(sessions_dir, "S")
        if kind == "truncated":
            with open(db, "r+b") as f:
                f.truncate(db.stat().st_size // 3)
        else:
            con = sqlite3.connect(db)
            if kind == "bad event row":
                con.execute("UPDATE events SET data = '{\"iteration\": 1,' WHERE seq = 2")
            else:
                con.execute("UPDATE meta SET value = 'settings? {' WHERE key = 'settings'")
            con.commit()
            con.close()
        return folder
    folder.mkdir()
    if kind == "zero bytes":
        db.write_bytes(b"")
    elif kind == "empty schema":
        con = sqlite3.connect(db)
        con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                          "CREATE TABLE events (seq INTEGER PRIMARY KEY, t REAL, kind TEXT, path TEXT, data TEXT);"
                          "CREATE TABLE blobs (hash TEXT PRIMARY KEY, text TEXT NOT NULL);")
        con.close()
    elif kind == "random bytes":
        db.write_bytes(os.urandom(20000))
    else:
        db.mkdir()
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_says_a_broken_session_is_unreadable(sessions_dir, kind, command):
    folder = break_session(sessions_dir, kind)
    before = snapshot(sessions_dir)
    proc = stop_tui(*COMMANDS[command], "--sessions-dir", str(sessions_dir), timeout=120,
                    env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})  # never reached
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stop-tui: error: session S is unreadable: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(sessions_dir) == before  # nothing created, nothing repaired or rewritten
    assert folder.exists()


@pytest.mark.parametrize("kind", BROKEN)
def test_list_shows_a_broken_session_as_unreadable_and_lists_the_rest(sessions_dir, kind):
    break_session(sessions_dir, kind)
    good_session(sessions_dir, "fine")
    before = snapshot(sessions_dir)
    proc = stop_tui("list", "--sessions-dir", str(sessions_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("S ") and "unreadable: " in lines[0]
    assert lines[1].startswith("fine ") and "lpn" in lines[1]
    rows = json.loads(stop_tui("list", "--json", "--sessions-dir", str(sessions_dir)).stdout)
    assert [(r["session"], r["state"]) for r in rows] == [("S", "unreadable"), ("fine", "new")]
    assert rows[0]["unreadable"]
    assert snapshot(sessions_dir) == before


def test_read_only_commands_create_and_change_nothing(sessions_dir):
    folder = good_session(sessions_dir, "done")
    time.sleep(0.02)
    before = snapshot(sessions_dir)
    assert set(before) == {"done", "done/session.db"}
    for args in (["list"], ["list", "--json"], ["show", "done"], ["show", "done", "--json"],
                 ["audit", "done"], ["audit", "done", "--json"]):
        proc = stop_tui(*args, "--sessions-dir", str(sessions_dir))
        assert proc.returncode == 0, (args, proc.stderr)
    assert snapshot(sessions_dir) == before
    assert not (folder / "session.db-wal").exists() and not (folder / "session.db-shm").exists()


def test_read_only_commands_work_on_a_read_only_mount(sessions_dir, tmp_path):
    """We run as root, which ignores chmod: a read-only bind mount makes the folder really
    read-only (writes fail with EROFS), so this proves the commands need no write at all."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    good_session(sessions_dir, "done")
    script = tmp_path / "commands.sh"
    script.write_text(textwrap.dedent(f"""\
        set -e
        mount --bind "$1" "$1"
        mount -o remount,bind,ro "$1"
        if touch "$1/probe" 2>/dev/null; then echo "still writable"; exit 9; fi
        for c in "list" "show done" "audit done" "show done --json"; do
            {sys.executable} -m stop_tui $c --sessions-dir "$1" > /dev/null
            echo "ok: $c"
        done
    """))
    proc = subprocess.run(["unshare", "-m", "sh", str(script), str(sessions_dir)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    if proc.returncode != 0 and ("mount:" in proc.stderr or "unshare:" in proc.stderr):
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["ok: list", "ok: show done", "ok: audit done", "ok: show done --json"]
    assert "Traceback" not in proc.stderr


def test_resume_of_an_empty_database_is_refused_not_run_on_the_embedded_model(sessions_dir):
    folder = break_session(sessions_dir, "zero bytes")
    proc = stop_tui("run", "--resume", "S", "--model", "scripted", "--sessions-dir", str(sessions_dir), timeout=60)
    assert proc.returncode == 2 and "session S is unreadable: empty database" in proc.stderr, proc.stderr
    assert (folder / "session.db").stat().st_size == 0


HOLD_WRITE = textwrap.dedent("""
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    if sys.argv[2] == "exclusive locking mode":  # holds the file even between transactions
        con.execute("PRAGMA locking_mode = EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        con.execute("INSERT INTO meta VALUES ('foreign', '1')")
        con.execute("COMMIT")
    else:
        con.execute("BEGIN EXCLUSIVE")
        con.execute("INSERT INTO meta VALUES ('foreign', '1')")
    print("held", flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
@pytest.mark.parametrize("hold", ["open transaction", "exclusive locking mode"])
def test_another_sqlite_writer_is_named_in_one_line(sessions_dir, hold):
    folder = good_session(sessions_dir, "S")
    other = subprocess.Popen([sys.executable, "-c", HOLD_WRITE, str(folder / "session.db"), hold],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        commands = [["run", "--resume", "S"]]  # a writer of the session's database
        if hold == "exclusive locking mode":  # then it shuts out readers too
            commands += [["show", "S"], ["audit", "S"], ["baseline", "--method", "cot", "--session", "S"]]
        else:  # readers are not held up by a transaction: they see the last committed state
            shown = stop_tui("show", "S", "--sessions-dir", str(sessions_dir))
            assert shown.returncode == 0 and "lpn" in shown.stdout, shown.stderr
        for args in commands:
            started = time.monotonic()
            proc = stop_tui(*args, "--sessions-dir", str(sessions_dir), timeout=60)
            took = time.monotonic() - started
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert lines == ["stop-tui: error: session S's database is locked by another program (an SQLite "
                             "transaction holds it); close that program and try again"], proc.stderr
            assert took < 6, took
        if hold == "exclusive locking mode":
            good_session(sessions_dir, "other")
            listed = stop_tui("list", "--sessions-dir", str(sessions_dir))
            assert listed.returncode == 0, listed.stderr
            assert [line.split()[0] for line in listed.stdout.splitlines()] == ["S", "other"]
            assert "database is locked by another program" in listed.stdout.splitlines()[0]
    finally:
        other.kill()
        other.wait()

"""A killed engine's sandbox folders are removed at the next start (issue 15, item 22).

Each Sandbox keeps its run's output in a `stop-sandbox-out-*` folder, a pool in the fallback
modes its runs' scratch in `stop-sandbox-scratch-*`. An engine killed mid-run cannot remove
them; the next engine to start the sandbox removes those whose owner is dead, and only those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, stop_tui

from stop_tui.engine.sandbox import tempdirs

pytestmark = pytest.mark.timeout(180)

ENGINE = r'''
from stop_tui.engine.sandbox.isolation import PoolConfig
from stop_tui.engine.sandbox.pool import Pool
from stop_tui.engine.sandbox.process import Sandbox

pool = Pool(PoolConfig(mode="plain"))
box = Sandbox("import time\ndef algorithm():\n    time.sleep(60)\n", "algorithm", pool=pool)
box.start()
print(box.scratch, pool._host_scratch, flush=True)
box.call((), 60)
'''


@pytest.fixture
def temp_root():
    """A temporary folder of its own (TMPDIR), traversable by the runs' uids."""
    folder = Path(tempfile.mkdtemp(prefix="stop-tempdirs-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_folders_of_a_killed_engine_are_removed_at_the_next_start(temp_root, monkeypatch):
    env = {**os.environ, "TMPDIR": str(temp_root), "PYTHONPATH": str(ROOT)}
    engine = subprocess.Popen([sys.executable, "-c", ENGINE], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env=env)
    try:
        line = engine.stdout.readline().split()
    finally:
        engine.kill()
        engine.wait()
    assert len(line) == 2, "the engine did not start its run"
    left = [Path(p) for p in line]
    assert all(p.is_dir() and p.parent == temp_root for p in left), left
    assert {p.name.split("-")[2] for p in left} == {"out", "scratch"}

    # Folders the next start must keep: a live owner's (this process), and unknown owners'.
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    mine = tempdirs.make("out")
    unknown = temp_root / "stop-sandbox-out-notapid-x"
    unknown.mkdir()
    other = temp_root / "stop-sandbox-notes"
    other.mkdir()

    proc = stop_tui("score", "--task", "grid", str(ROOT / "tasks" / "grid" / "seed.py"),
                    env={"TMPDIR": str(temp_root)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("grid val: ")
    assert not any(p.exists() for p in left), [p for p in left if p.exists()]
    assert mine.is_dir() and unknown.is_dir() and other.is_dir()
    # and the CLI run left nothing of its own behind
    assert sorted(p.name for p in temp_root.iterdir()) == sorted([mine.name, unknown.name, other.name])


def test_only_dead_owners_folders_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"],
                            stdout=subprocess.PIPE, text=True)
    pid = int(dead.stdout.read())
    dead.wait()
    start = tempdirs._start_time(os.getpid())
    stale = tmp_path / f"stop-sandbox-scratch-{pid}.1-abc"
    reused = tmp_path / f"stop-sandbox-out-{os.getpid()}.{int(start) + 1}-abc"  # pid reused
    live = tmp_path / f"stop-sandbox-out-{os.getpid()}.{start}-abc"
    for folder in (stale, reused, live):
        folder.mkdir()
        (folder / "output.txt").write_text("x")
    removed = tempdirs.remove_stale(tmp_path)
    assert sorted(removed) == sorted([stale, reused])
    assert live.is_dir() and not stale.exists() and not reused.exists()

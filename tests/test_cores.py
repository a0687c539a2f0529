"""How many cores the engine may start another evaluation on (engine/cores.py): what other
processes keep busy now counts, this process's own work and a busy minute that has passed do
not (the load average would count both)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from stop_tui.engine import cores

SETTLE = 2 * cores.WINDOW  # long enough for the look back to cover only what runs now
CORES = len(os.sched_getaffinity(0))

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat") or CORES < 2,
                                reason="needs /proc/stat and 2 cores")


def settled() -> float:
    cores.idle_cores()
    time.sleep(SETTLE)
    return cores.idle_cores()


def test_other_processes_spinning_take_their_cores():
    quiet = settled()
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(CORES)]
    try:
        time.sleep(0.5)  # their start-up over
        busy = settled()
    finally:
        for proc in spinning:
            proc.kill()
            proc.wait()
    assert busy < 0.5, busy
    assert quiet - busy > CORES - 1, (quiet, busy)
    assert settled() > busy + CORES - 1  # and they are free again at once (not a minute later)


def test_this_processs_own_threads_do_not_count():
    quiet = settled()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        busy = settled()
    finally:
        stop.set()
        thread.join()
    assert busy > quiet - 0.5, (quiet, busy)


def test_an_evaluation_in_progress_takes_one_core():
    quiet = settled()
    with cores.evaluating():
        during = settled()
        with cores.evaluating_if_idle() as second:
            assert second == (during >= 0.5)
    assert quiet - during == pytest.approx(1.0, abs=0.4), (quiet, during)


def test_no_idle_core_means_an_evaluation_ahead_does_not_start(monkeypatch):
    monkeypatch.setattr(cores, "_busy_elsewhere", lambda: CORES - 0.25)
    with cores.evaluating_if_idle() as started:
        assert started is False
    monkeypatch.setattr(cores, "_busy_elsewhere", lambda: CORES - 1.0)
    with cores.evaluating_if_idle() as started:
        assert started is True
        with cores.evaluating_if_idle() as another:
            assert another is False  # the first took the one idle core

"""How many cores another sandboxed evaluation can start on without slowing the others (the
tasks' time limits are wall-clock, so an evaluation squeezed onto a busy core can lose score)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_running = 0  # evaluations (inside `evaluating`) in progress in this process
_lock = threading.Lock()


@contextmanager
def evaluating() -> Iterator[None]:
    """Count an evaluation as running (it keeps one core busy) while the block runs."""
    global _running
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1


def idle_cores() -> float:
    """The cores this process may use, less what keeps them busy: the evaluations it runs now
    or the machine's load (its 1-minute average: other processes, other sessions), whichever
    is more."""
    with _lock:
        running = _running
    return len(os.sched_getaffinity(0)) - max(running, os.getloadavg()[0])

"""How many cores another sandboxed evaluation can start on without slowing the others (the
tasks' time limits are wall-clock, so an evaluation squeezed onto a busy core can lose score).

Busy are the evaluations this process runs now (`evaluating`) and what the rest of the machine
did over the last moment: the cores' busy time in /proc/stat over the last WINDOW seconds, less
this process's own CPU time and its evaluations' (each counted as one core for as long as it
ran). Not the load average: it lags a minute behind, so this process's own start-up, or a run
that has just ended, would read as another session still running and keep two idle cores
working one after the other. Where /proc/stat cannot be read: the 1-minute load average.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

WINDOW = 0.3  # seconds of the machine's recent past that say how busy it is now
MIN_WINDOW = 0.05  # a shorter one says nothing (the kernel counts in ticks of 10 ms)

_lock = threading.Lock()
_running: dict[int, float] = {}  # the evaluations in progress in this process: id -> start
_ended_seconds = 0.0  # the wall time of this process's evaluations that have ended
_samples: deque[tuple[float, float, float]] = deque()  # (when, machine busy s, this process's s)
_keys = itertools.count()
_TICK = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _machine_busy() -> float | None:
    """CPU-seconds the machine's cores have been busy since boot, None where /proc/stat is not."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) * _TICK


def _own_busy(now: float) -> float:
    """This process's CPU-seconds (all its threads) and its evaluations' (called with _lock)."""
    t = os.times()
    return t.user + t.system + _ended_seconds + sum(now - start for start in _running.values())


def _busy_elsewhere() -> float:
    """Cores the rest of the machine kept busy over the last WINDOW seconds (called with _lock)."""
    now, machine = time.monotonic(), _machine_busy()
    if machine is None:
        return max(0.0, os.getloadavg()[0] - len(_running))
    own = _own_busy(now)
    base = None
    for sample in _samples:  # the newest sample at least WINDOW old, else the oldest
        if now - sample[0] < WINDOW:
            break
        base = sample
    if base is None and _samples and now - _samples[0][0] >= MIN_WINDOW:
        base = _samples[0]
    while _samples and _samples[0] is not base:
        _samples.popleft()
    _samples.append((now, machine, own))
    if base is None:  # the first look: as busy as the load average says
        return max(0.0, os.getloadavg()[0] - len(_running))
    return max(0.0, (machine - base[1]) - (own - base[2])) / (now - base[0])


def _idle() -> float:
    return len(os.sched_getaffinity(0)) - len(_running) - _busy_elsewhere()


def idle_cores() -> float:
    """The cores this process may use, less the evaluations it runs now and what the rest of
    the machine keeps busy."""
    with _lock:
        return _idle()


def free_cores() -> int:
    """idle_cores in whole cores (a core at least half idle counts)."""
    return max(0, int(idle_cores() + 0.5))


def _start() -> int:
    key = next(_keys)
    _running[key] = time.monotonic()
    return key


def _end(key: int) -> None:
    global _ended_seconds
    with _lock:
        _ended_seconds += time.monotonic() - _running.pop(key)


@contextmanager
def evaluating() -> Iterator[None]:
    """Count an evaluation as running (it keeps one core busy) while the block runs."""
    with _lock:
        key = _start()
    try:
        yield
    finally:
        _end(key)


@contextmanager
def evaluating_if_idle() -> Iterator[bool]:
    """Like `evaluating` when a core is idle for one more evaluation (at least half of it),
    checked and counted at once; else yields False and counts nothing."""
    with _lock:
        key = _start() if _idle() >= 0.5 else None
    try:
        yield key is not None
    finally:
        if key is not None:
            _end(key)


with _lock:
    _busy_elsewhere()  # the first sample: the first look then covers the time since start-up

"""Where a sandboxed run's time goes: named spans, recorded only while a caller asks.

While `recording()` is active, every Sandbox of this process asks its run for the marks it
took (the zygote's fork and each set-up step of the run, the program's load, each call's
decoding, run and reply: CLOCK_MONOTONIC, which the sandbox shares with the engine, having no
time namespace) and adds the intervals between them to the recorder, beside the engine side's
own (encoding the inputs, parsing and checking the replies, hanging up). bench/sandbox_pool.py
prints the result. Nothing is recorded, and no run is asked for marks, otherwise.

Marks come from the run's process, where the candidate's code runs: they are for looking at,
never for deciding anything (the engine's clock and limits use only its own stamps).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The run's marks, in the order it takes them, and the span each closes (the interval from the
# previous mark). See zygote.Zygote.spawn/become_run and child.serve.
_SETUP = {
    "forked": "fork (zygote -> fresh run process)",
    "process": "run set-up (session, parent-death signal, standard streams, signals)",
    "scratch": "namespace and mount set-up (own mount namespace, tmpfs scratch)",
    "uid": "uid drop (groups, gid, uid, parent-death signal again)",
    "seccomp": "seccomp load (build and install the filter)",
    "env": "environment",
    "warm": "warm-up: the call path once on made-up data (first-use costs, child.warm_up)",
}
# A run's process is a spare (zygote.prepare_spare), set up before its run is asked for: the
# spans of its set-up that ended before the engine asked are off the engine's wait, and named so.
IN_ADVANCE = "spare, in advance: "
RUN_SPANS = {
    "spawn": "spawn request (engine -> zygote)",
    "prepare": "zygote: a spare's slot and scratch folder (none was ready)",
    **_SETUP,
    "handed": "spawn: the spare takes the run's sockets and output file",
    "output": "run set-up: output file and rlimits",
}
LOAD_SPANS = {
    "received": "load: the program's text reaches the run (socket, its wake-up)",
    "parsed": "load: JSON parsing in the run",
    "loaded": "load: compile and run the program's top level",
}
CALL_SPANS = {
    "received": "call: inputs reach the run (JSON protocol: socket, its wake-up)",
    "parsed": "call: JSON parsing (and the arrays' bytes) in the run",
    "dequeued": "call: handed to the run's call loop",
    "rng": "call: RNG set-up in the run",
    "decoded": "call: input decoding (arrays from raw bytes); staged notice sent",
    "ran": "call: the candidate's own function",
    "encoded": "call: result conversion in the run",
}


class Recorder:
    """Spans by name: how often each was seen and its total nanoseconds. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total: dict[str, int] = {}
        self.count: dict[str, int] = {}

    def add(self, name: str, nanoseconds: int) -> None:
        with self._lock:
            self.total[name] = self.total.get(name, 0) + max(0, int(nanoseconds))
            self.count[name] = self.count.get(name, 0) + 1

    def marks(self, marks: object, names: dict[str, str], start: int | None = None) -> int | None:
        """Add the spans between `marks` ([[name, ns], ...], as a run sends them) in the order
        of time, each named by the mark that ends it. Marks before `start` (when the engine
        asked) were taken in advance: chained among themselves and named IN_ADVANCE + name;
        the first mark from `start` on spans from `start`. Returns the last mark's time."""
        if not isinstance(marks, list):
            return None
        items = sorted((item[1], item[0]) for item in marks
                       if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int)
                       and isinstance(item[0], str))
        previous, advance = start, None
        for at, name in items:
            if start is not None and at < start:
                if advance is not None and name in names:
                    self.add(IN_ADVANCE + names[name], at - advance)
                advance = at
                continue
            if previous is not None and name in names:
                self.add(names[name], at - previous)
            previous = at
        return previous


_active: Recorder | None = None


def active() -> Recorder | None:
    return _active


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record the spans of every sandboxed run of this process within the block."""
    global _active
    recorder, previous = Recorder(), _active
    _active = recorder
    try:
        yield recorder
    finally:
        _active = previous

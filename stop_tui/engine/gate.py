"""Pause and step: gates the engine passes at every LM call and between iterations.

The headless runner leaves the gate open; the TUI closes it and opens it one step at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stop_tui.engine.errors import Cancelled

CALL = "call"
ITERATION = "iteration"


class Gate:
    def __init__(self, running: bool = True) -> None:
        self._cond = threading.Condition()
        self._mode = "run" if running else "pause"  # run | pause | call | iteration
        self._cancel = threading.Event()
        self._waiting_at: str | None = None  # the point the engine is blocked at, if any
        self._pass_boundary = False
        self.on_wait: Callable[[str], None] | None = None  # told when the engine starts waiting

    @property
    def cancel_event(self) -> threading.Event:
        return self._cancel

    @property
    def mode(self) -> str:
        return self._mode

    def _set(self, mode: str) -> None:
        with self._cond:
            self._mode = mode
            self._cond.notify_all()

    def run(self) -> None:
        self._set("run")

    def pause(self) -> None:
        self._set("pause")

    def step_call(self) -> None:
        """Let exactly one more LM call through, then pause."""
        self._set("call")

    def step_iteration(self) -> None:
        """Finish the current iteration (or, at a boundary, run the next one), then pause."""
        with self._cond:
            self._pass_boundary = self._waiting_at == ITERATION
            self._mode = "iteration"
            self._cond.notify_all()

    def cancel(self) -> None:
        self._cancel.set()
        with self._cond:
            self._cond.notify_all()

    def passage(self, point: str) -> None:
        """Block until the engine may pass `point` (CALL or ITERATION); raise Cancelled on quit."""
        with self._cond:
            told = False
            while True:
                if self._cancel.is_set():
                    raise Cancelled()
                mode = self._mode
                if mode == "run":
                    self._waiting_at = None
                    return
                if mode == "call" and point == CALL:
                    self._mode = "pause"
                    self._waiting_at = None
                    return
                if mode == "call" and point == ITERATION:
                    # Stepping one LM call from a boundary: into the next iteration, up to
                    # (and through) its first call.
                    self._waiting_at = None
                    return
                if mode == "iteration" and point == CALL:
                    self._waiting_at = None
                    return
                if mode == "iteration" and point == ITERATION:
                    if self._pass_boundary:
                        self._pass_boundary = False
                        self._waiting_at = None
                        return
                    self._mode = "pause"  # the iteration is done: stop at this boundary
                self._waiting_at = point
                if not told and self.on_wait is not None:
                    told = True
                    self.on_wait(point)
                self._cond.wait(0.2)

"""Child processes that die with the process that started them, even when it is SIGKILLed.

Every process the engine starts (the sandbox's worker, the local model's worker) is started in
its own session (start_new_session, bwrap --new-session), out of reach of whatever signals the
engine's process group: a Ray worker killed with SIGKILL, or `ray.shutdown()`, would leave such a
process behind. So each one gets the parent-death signal SIGKILL (PR_SET_PDEATHSIG), armed in the
child between fork and exec; the child then checks that its parent is still the process that
forked it, so there is no moment at which the engine can die and leave it running. The signal is
kept across exec, but for a set-user-ID program (bubblewrap on some systems: its own
--die-with-parent arms it again).

Linux sends that signal when the *thread* that forked the child exits, not the process: a child
started from a short-lived thread (a meta-utility's run, an improver's proxy call, a request's
thread) would die with it. So every child is started by a Launcher's own thread, which lives as
long as the process (or until its owner stops it, having stopped every child it started).

Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1
SIGKILL = 9


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: arm SIGKILL on the parent's death, then leave at once if `parent` (the
    forking process) is already gone. Only async-signal-safe work: it runs between fork and exec."""

    def arm() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


_Requests = queue.SimpleQueue  # of (argv, Popen options, Future for the Popen), or None: stop


class Launcher:
    """One long-lived thread that starts child processes that die with this process."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._requests: _Requests | None = None  # the running thread's
        self._pid = 0  # the process that thread runs in (a forked copy has no such thread)
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **options: Any) -> subprocess.Popen:
        """subprocess.Popen(argv, **options) in the launcher thread, the child armed with
        die_with_parent (no other preexec_fn is allowed)."""
        if "preexec_fn" in options:
            raise TypeError("Launcher.popen sets preexec_fn itself")
        options["preexec_fn"] = die_with_parent(os.getpid())
        reply: Future = Future()
        with self._lock:
            if self._requests is None or self._pid != os.getpid():
                self._requests, self._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=self._serve, args=(self._requests,), daemon=True,
                                 name=self._name).start()
            self._requests.put((argv, options, reply))
        return reply.result()

    def stop(self) -> None:
        """End the thread (once every child it started has been stopped: they die with it)."""
        with self._lock:
            if self._requests is not None:
                self._requests.put(None)
                self._requests = None

    @staticmethod
    def _serve(requests: _Requests) -> None:
        while (request := requests.get()) is not None:
            argv, options, reply = request
            try:
                reply.set_result(subprocess.Popen(argv, **options))
            except BaseException as exc:  # handed to the caller, which raises it
                reply.set_exception(exc)


_process_launcher = Launcher("stop-tui-launcher")


def popen(argv: list[str], **options: Any) -> subprocess.Popen:
    """Start a child that dies with this process, from the process-wide launcher thread."""
    return _process_launcher.popen(argv, **options)

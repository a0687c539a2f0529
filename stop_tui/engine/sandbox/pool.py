"""The warm pool: one confined zygote (numpy preloaded) forks a fresh process per run.

The engine keeps one `Pool` per process (`default_pool()`); every `Sandbox` asks it for a run.
Starting a run costs handing a spare process (forked and confined by the zygote in advance) its
sockets, not a new interpreter, so isolation does not multiply the cost of an evaluation
(bench/sandbox_pool.py measures it). When the zygote dies
or stops answering, the pool kills its whole confinement (the pid namespace goes with it) and
starts a new one on the next request.

The zygote dies with the engine, even a SIGKILLed one (a Ray worker killed mid-evaluation):
its outermost process gets the parent-death signal before exec (engine/lifetime.py), bwrap
--die-with-parent carries it to everything inside, and the zygote arms its own (SIGTERM: it
kills its runs' processes, then leaves; each run dies with the zygote). Linux sends that
signal when the *thread* that forked the process exits, not the process: a zygote started from a
short-lived thread (a meta-utility's run, an improver's proxy call, an evaluation) would die with
it, and the next run would read "the sandbox worker died". So every zygote of a pool is started
by the pool's own launcher thread, which lives as long as the engine process (or until the pool
is closed).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stop_tui.engine.lifetime import Launcher
from stop_tui.engine.sandbox import tempdirs
from stop_tui.engine.sandbox.cgroups import Cgroups, machine_memory
from stop_tui.engine.sandbox.isolation import (
    Launch,
    PoolConfig,
    candidate_modes,
    plan,
    prefix_readable_by_others,
)
from stop_tui.engine.sandbox.protections import CHECKED_LIVE, NAMES, missing, none_active

READY_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0
HANGUP_GRACE = 1.0  # seconds a hung-up worker gets to kill its runs and exit before SIGKILL


class PoolError(RuntimeError):
    """The sandbox worker could not be started or stopped answering."""


@dataclass
class Run:
    """One forked run inside the zygote, as the engine sees it."""

    id: int
    pool: Pool
    generation: int
    pid: int | None = None
    error: str | None = None
    status: int | None = None  # exit status (negative: killed by that signal)
    spawned: threading.Event = field(default_factory=threading.Event)
    killed: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)

    def kill(self, timeout: float = REPLY_TIMEOUT) -> None:
        self.pool.kill(self, timeout)

    def release(self, grace: float) -> None:
        self.pool.release(self, grace)

    def wait_status(self, timeout: float) -> int | None:
        self.exited.wait(timeout)
        return self.status


_cleaned = threading.Event()


def _clean_once() -> None:
    """The first pool of this process removes the temporary folders of dead engines."""
    if not _cleaned.is_set():
        _cleaned.set()
        tempdirs.remove_stale()


class Pool:
    """A confined zygote and the runs it forks. Thread-safe."""

    _serial = itertools.count(1)

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.mode: str | None = None
        self.protections: dict[str, bool] = {}
        self.failures: list[str] = []  # why stronger modes could not start
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._launcher = Launcher("sandbox-launcher")
        self._ctrl: socket.socket | None = None
        self._runs: dict[int, Run] = {}
        self._ids = itertools.count(1)
        self._generation = 0
        self._ready = threading.Event()
        self._ready_message: dict[str, Any] = {}
        self._cgroups: Cgroups | None = None
        self._host_scratch: Path | None = None
        self._closed = False
        self.scratch_note: str | None = None  # why runs could not have their own scratch
        self.seccomp_note: str | None = None  # what the live probe of the seccomp filter found wrong
        # The spare (the next run's process, confined and waiting: zygote.prepare_spare), by
        # its pid as the worker sees it (in its pid namespace, where it has one); None when it
        # died. Right after a spawn it still names the spare just handed over, until the worker
        # has made the next.
        self.spare_pid: int | None = None

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._alive():
                return
            self._stop()
            _clean_once()
            self.failures = []
            for mode in candidate_modes(self.config):
                try:
                    self._launch(mode)
                    return
                except PoolError as exc:
                    self.failures.append(f"{mode}: {exc}")
                    self._stop()
            raise PoolError("no sandbox mode could start: " + "; ".join(self.failures))

    @property
    def worker_pid(self) -> int | None:
        """The process id of the running worker (its confinement's outermost process)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._ready.is_set() \
            and self._ctrl is not None

    def _launch(self, mode: str) -> None:
        if mode != "bwrap":
            self._host_scratch = tempdirs.make("scratch")
            os.chmod(self._host_scratch, 0o711)
        launch: Launch = plan(mode, self.config, self._host_scratch)
        name = f"stop-tui-{os.getpid()}-{next(self._serial)}"
        memory = int(machine_memory() * self.config.pool_memory_fraction)
        self._cgroups = Cgroups(name, self.config.pool_processes, memory)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [*launch.argv, str(child.fileno())]
        procs = self._cgroups.procs_files
        if procs or os.geteuid() == 0:
            # Join the cgroups and protect the zygote from the OOM killer before anything
            # starts, then exec the real command.
            script = "".join(f'echo $$ > "{p}" 2>/dev/null; ' for p in procs)
            script += 'echo -1000 > /proc/self/oom_score_adj 2>/dev/null; exec "$@"'
            argv = ["/bin/sh", "-c", script, "stop-sandbox", *argv]
        self._generation += 1
        self._ready.clear()
        try:
            self._proc = self._launcher.popen(argv, pass_fds=(child.fileno(),), env={}, cwd="/",
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, start_new_session=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: no new thread at interpreter exit
            parent.close()
            raise PoolError(f"cannot start ({exc})") from None
        finally:
            child.close()
        self._ctrl = parent
        generation = self._generation
        threading.Thread(target=self._read, args=(parent, generation), daemon=True,
                         name="sandbox-pool").start()
        self._send({"op": "config", **launch.zygote_config})
        if not self._ready.wait(READY_TIMEOUT) or not self._ready_message:
            err = self._stderr_tail()
            raise PoolError(err or "the worker did not start")
        # What follows from the mode, then what the worker checked live (under the same names).
        checks = self._ready_message.get("checks", {})
        protections = dict(launch.static)
        protections.update({name: bool(checks.get(name)) for name in CHECKED_LIVE})
        if "scratch_size_cap" in checks:  # host file system: capped only if all else is read-only
            protections["scratch_size_cap"] = bool(checks["scratch_size_cap"])
        protections["pool_cgroup"] = all(self._cgroups.active.values())
        self.seccomp_note = checks.get("seccomp_error")
        self.scratch_note = checks.get("per_run_scratch_error")
        self.protections = {k: protections.get(k, False) for k in NAMES}
        self.mode = launch.mode

    def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        if proc.poll() is None:
            self._kill_proc()
        try:
            text = proc.stderr.read(4000).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else f"exited with code {proc.returncode}"

    def _kill_proc(self, grace: float = 0.0) -> None:
        """SIGKILL the worker's process group, once it has had `grace` seconds to end by itself
        (hung up on, the zygote kills every process of its runs first: without a pid namespace,
        in plain mode, nothing else kills what a run started in another session)."""
        proc = self._proc
        if proc is None:
            return
        if grace:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # bwrap dies, and with it the pid namespace
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def _stop(self) -> None:
        """Kill the zygote and everything it started; fail every run still waiting."""
        ctrl, self._ctrl = self._ctrl, None
        if ctrl is not None:
            try:
                ctrl.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ctrl.close()
        self._kill_proc(HANGUP_GRACE if ctrl is not None else 0.0)
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        self._fail_all("the sandbox worker stopped")
        if self._cgroups is not None:
            self._cgroups.remove()
            self._cgroups = None
        if self._host_scratch is not None:
            shutil.rmtree(self._host_scratch, ignore_errors=True)
            self._host_scratch = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()
            self._launcher.stop()

    def _fail_all(self, reason: str) -> None:
        runs, self._runs = self._runs, {}
        for run in runs.values():
            if run.error is None and run.pid is None:
                run.error = reason
            run.status = run.status if run.status is not None else -signal.SIGKILL
            for event in (run.spawned, run.killed, run.exited):
                event.set()

    # -- messages ---------------------------------------------------------------------
    def _send(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        ctrl = self._ctrl
        if ctrl is None:
            raise PoolError("the sandbox worker is not running")
        data = json.dumps(message).encode()
        with self._send_lock:
            try:
                if fds:
                    socket.send_fds(ctrl, [data], list(fds))
                else:
                    ctrl.send(data)
            except OSError as exc:
                raise PoolError(f"the sandbox worker is gone ({exc})") from None

    def _read(self, ctrl: socket.socket, generation: int) -> None:
        while True:
            try:
                data = ctrl.recv(1 << 16)
            except OSError:
                break
            if not data:
                break
            try:
                message = json.loads(data)
            except ValueError:
                continue
            op = message.get("op")
            if op == "ready":
                self._ready_message = message
                self._ready.set()
                continue
            if op == "spare":
                self.spare_pid = message.get("pid")
                continue
            run = self._runs.get(message.get("id"))
            if run is None:
                continue
            if op == "spawned":
                run.pid = message.get("pid")
                run.spawned.set()
            elif op == "failed":
                run.error = str(message.get("error"))
                run.spawned.set()
                run.exited.set()
            elif op == "killed":
                run.killed.set()
            elif op == "exit":
                run.status = message.get("status")
                run.exited.set()
                run.killed.set()
                self._runs.pop(run.id, None)
        self._ready.set()  # unblock a start() that waits
        with self._lock:
            if self._generation == generation:
                self._fail_all("the sandbox worker died")

    # -- runs -------------------------------------------------------------------------
    def spawn(self, fds: tuple[int, int, int], limits: dict[str, Any],
              sent: Callable[[], None] | None = None) -> Run:
        """A fresh run from the zygote; `fds`: its protocol socket, its output file and its
        staging-notice socket (see process.py). `sent()`, if given, is called once the request
        is on its way (the zygote holds its own copies of `fds` then), before the answer is
        waited for: the caller can talk to the run meanwhile."""
        with self._lock:
            if self._closed:
                raise PoolError("the sandbox pool is closed")
            self.start()
            run = Run(next(self._ids), self, self._generation)
            self._runs[run.id] = run
            try:
                self._send({"op": "spawn", "id": run.id, "limits": limits}, fds)
            except PoolError:
                self._runs.pop(run.id, None)
                self._stop()
                raise
        if sent is not None:
            sent()
        if not run.spawned.wait(REPLY_TIMEOUT):
            self.restart(run.generation)
            raise PoolError("the sandbox worker did not answer")
        if run.error is not None:
            raise PoolError(run.error)
        return run

    def kill(self, run: Run, timeout: float = REPLY_TIMEOUT) -> None:
        """Kill the run and everything it started; restart the zygote if it does not answer."""
        if run.exited.is_set() or run.killed.is_set():
            return
        try:
            self._send({"op": "kill", "id": run.id})
        except PoolError:
            return
        if not run.killed.wait(timeout):
            self.restart(run.generation)

    def release(self, run: Run, grace: float) -> None:
        """The engine is done with the run (and hung up): it gets `grace` seconds to exit by
        itself, then the zygote kills it and everything it started. Does not wait."""
        if run.exited.is_set() or run.killed.is_set():
            return
        try:
            self._send({"op": "release", "id": run.id, "grace": grace})
        except PoolError:
            pass  # the worker is gone, and its runs with it

    def restart(self, generation: int) -> None:
        with self._lock:
            if self._generation == generation:
                self._stop()

    def describe(self) -> dict[str, Any]:
        self.start()
        notes = []
        if not self.protections.get("per_run_scratch"):
            notes.append("runs share one scratch space"
                         + (f" (a private tmpfs per run failed: {self.scratch_note})"
                            if self.scratch_note else ""))
        if self.seccomp_note:
            notes.append(f"seccomp filter: {self.seccomp_note}")
        if self.mode != "bwrap" and os.geteuid() == 0 and not prefix_readable_by_others():
            notes.append("the Python prefix is not readable by the runs' uid: they can import only "
                         "the modules the worker preloaded (numpy and common stdlib)")
        return {"mode": self.mode, "protections": dict(self.protections),
                "missing": missing(self.protections),
                "fallbacks": list(self.failures), "notes": notes}


_default: Pool | None = None
_default_lock = threading.Lock()


def default_pool() -> Pool:
    global _default
    with _default_lock:
        if _default is None:
            _default = Pool()
            atexit.register(_default.close)
        return _default


def sandbox_report() -> dict[str, Any]:
    """The SANDBOX event payload: {mode, protections, missing, fallbacks[, error]}. Never raises:
    a sandbox that cannot start is reported with every protection missing."""
    try:
        return default_pool().describe()
    except PoolError as exc:
        return {"mode": None, "protections": none_active(),
                "missing": list(NAMES), "fallbacks": [], "error": str(exc)}

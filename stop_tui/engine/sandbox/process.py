"""The engine side of one sandboxed program: spawn, limit, talk, kill.

Each `Sandbox` is one fresh process forked by the warm, confined zygote of the pool (see
pool.py and isolation.py: bubblewrap or the kernel fallback, an unprivileged uid per run,
rlimits, a subreaper that kills everything the run starts). It talks JSON lines over a
socketpair; replies are parsed as JSON and validated; nothing from the child is ever unpickled
or executed here. Time limits are enforced here, by killing the run through the zygote.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stop_tui.engine.errors import Cancelled
from stop_tui.engine.sandbox import tempdirs
from stop_tui.engine.sandbox.isolation import SAFE_ENV  # noqa: F401  (re-exported)
from stop_tui.engine.sandbox.pool import Pool, PoolError, Run, default_pool

MAX_MESSAGE = 32 * 1024 * 1024  # bytes per reply line
KILL_GRACE = 1.0  # seconds past a call's time limit before the run is killed
LOAD_TIMEOUT = 10.0  # seconds for the program's top-level code (imports, definitions)
CLOSE_GRACE = 0.2  # seconds a run gets to exit by itself once the engine hangs up
MAX_RPC_IN_FLIGHT = 64  # concurrent proxy calls one improver may have open

RpcHandler = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # address space per process (RLIMIT_AS)
    output_kb: int = 1024  # size of any file the run writes, its stdout/stderr included
    processes: int = 128  # processes and threads of one run (RLIMIT_NPROC on its own uid)
    open_files: int = 256  # RLIMIT_NOFILE
    cpu_seconds: int = 0  # RLIMIT_CPU per process (0: none; wall-clock limits still apply)
    load_seconds: float = LOAD_TIMEOUT  # wall clock for the program's top-level code

    def for_child(self) -> dict[str, int]:
        return {"memory_mb": self.memory_mb, "output_kb": self.output_kb,
                "processes": self.processes, "open_files": self.open_files,
                "cpu_seconds": self.cpu_seconds}


@dataclass(frozen=True)
class Outcome:
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    load_failed: bool = False  # the program never loaded (set by scoring's `run` for evaluate.py)


def encode(value: Any) -> Any:
    """Inputs for the child: numpy arrays travel tagged (numeric ones as base64 bytes, which is
    much faster than lists of numbers) and come back as arrays."""
    if hasattr(value, "dtype") and hasattr(value, "tolist") and hasattr(value, "shape"):
        if value.shape == ():
            return value.item()
        if value.dtype.kind in "biufc" and value.dtype.byteorder in "=|<":
            data = base64.b64encode(value.tobytes(order="C")).decode("ascii")
            return {"__ndarray_b64__": data, "dtype": value.dtype.str, "shape": list(value.shape)}
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def rng_state(rng: tuple | None) -> dict | None:
    """JSON form of (random.Random, np.random.RandomState) states, for the child to adopt."""
    if rng is None:
        return None
    py_rng, np_rng = rng
    state: dict[str, Any] = {"random": None, "numpy": None}
    if py_rng is not None:
        version, internal, gauss = py_rng.getstate()
        packed = base64.b64encode(struct.pack(f"<{len(internal)}Q", *internal)).decode("ascii")
        state["random"] = [version, packed, gauss]
    if np_rng is not None:
        name, keys, pos, has_gauss, cached = np_rng.get_state()
        packed = base64.b64encode(keys.astype("<u4").tobytes()).decode("ascii")
        state["numpy"] = [name, packed, int(pos), int(has_gauss), float(cached)]
    return state


class Sandbox:
    """One untrusted program in one fresh sandboxed process. Use as a context manager."""

    def __init__(self, source: str, entry: str, *, limits: Limits = Limits(),
                 rpc: RpcHandler | None = None, preload: tuple[str, ...] = ("numpy",),
                 cancel: threading.Event | None = None, pool: Pool | None = None) -> None:
        self.source, self.entry, self.limits = source, entry, limits
        self._rpc, self._preload = rpc, preload
        self._cancel = cancel or threading.Event()
        self._pool = pool
        self._run: Run | None = None
        self._sock: socket.socket | None = None
        self._replies: queue.Queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._busy_lock = threading.Lock()
        self._idle = threading.Condition(self._busy_lock)  # notified when no proxy call is open
        self._inflight = 0
        self._busy_since = 0.0
        self._busy_total = 0.0
        self._rpc_slots = threading.BoundedSemaphore(MAX_RPC_IN_FLIGHT)
        self._dead = False
        self._calls = 0  # call numbers: a reply must name the call it answers
        # Engine-side only (the run never sees this folder): the run's stdout and stderr.
        self.scratch = tempdirs.make("out")
        self.load_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        parent, child = socket.socketpair()
        self._sock = parent
        out_fd = os.open(self.scratch / "output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pool = self._pool or default_pool()
            self._run = pool.spawn(child.fileno(), out_fd, self.limits.for_child())
        except PoolError as exc:
            self.load_error = f"sandbox unavailable: {exc}"
            self._dead = True
            return
        finally:
            child.close()
            os.close(out_fd)
        threading.Thread(target=self._read, daemon=True, name="sandbox-reader").start()
        self._send({"op": "load", "source": self.source, "entry": self.entry,
                    "preload": list(self._preload),
                    "memory_mb": self.limits.memory_mb, "output_kb": self.limits.output_kb})
        reply = self._wait(self.limits.load_seconds, own_time=False)
        if reply.error is not None:
            self.load_error = reply.error
            if reply.error.startswith("timed out"):
                self.load_error = f"loading the program (its top-level code) {reply.error}"
            self.kill()

    def alive(self) -> bool:
        return self._run is not None and not self._dead and not self._run.exited.is_set() \
            and self.load_error is None

    def kill(self) -> None:
        """Kill the run and everything it started (the zygote sweeps its tree, uid, orphans)."""
        self._dead = True
        if self._run is not None:
            self._run.kill()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        run = self._run
        if run is not None and not self._dead and self._sock is not None:
            # Hang up first: a well-behaved child exits by itself (the zygote then sweeps
            # whatever it left); anything still there a moment later is killed.
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            run.exited.wait(CLOSE_GRACE)
        self.kill()
        if self._sock is not None:
            self._sock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def wait_rpcs(self, timeout: float) -> bool:
        """Wait until no proxy call of this run is being served (False at the timeout)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def output_tail(self, limit: int = 2000) -> str:
        try:
            data = (self.scratch / "output.txt").read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    # -- calls ----------------------------------------------------------------------------
    def call(self, args: tuple, time_limit: float, *, rng: tuple | None = None,
             seed: int | None = None) -> Outcome:
        """Run the program's entry function on `args`; the child is killed past the limit."""
        if not self.alive():
            return Outcome(error=self.load_error or "sandbox is not running")
        self._calls += 1
        # Two steps: the inputs are sent and staged (decoded, RNG set) first, then `go` starts
        # the call. Staging runs in the candidate's process, where its code could have hooked
        # the decoding and compute there: so it is on the clock too. The run's time is the
        # staging's plus the call's, measured here (the child cannot under-report it), and a
        # run whose staging alone passes the limit never starts.
        self._send({"op": "call", "n": self._calls, "args": encode(list(args)),
                    "rng": rng_state(rng), "seed": seed, "stage": True})
        staged = self._wait(time_limit + KILL_GRACE, own_time=False, call=self._calls, until="ready")
        if staged.error is not None:
            return staged
        if staged.seconds > time_limit:
            self.kill()
            return Outcome(error=f"timed out after {time_limit:g} s (staging its inputs took "
                                 f"{staged.seconds:.2f} s)", seconds=staged.seconds)
        self._send({"op": "go", "n": self._calls})
        out = self._wait(time_limit + KILL_GRACE - staged.seconds, own_time=False, call=self._calls)
        error = out.error
        if error is not None and error.startswith("timed out after"):
            error = f"timed out after {time_limit + KILL_GRACE:g} s"
        return Outcome(value=out.value, error=error, seconds=out.seconds + staged.seconds)

    def improve(self, spec: dict[str, Any], time_limit: float, *, wall_limit: float | None = None,
                seed: int | None = None) -> Outcome:
        """Run `improve_algorithm` with proxies; `time_limit` counts the improver's own time only
        (time the engine spends serving its LM and utility calls is excluded); `wall_limit`, if
        given, counts everything (a call kept in flight does not stop that clock)."""
        if not self.alive():
            return Outcome(error=self.load_error or "sandbox is not running")
        self._calls += 1
        self._send({"op": "call", "n": self._calls, "improve": spec, "seed": seed})
        return self._wait(time_limit, own_time=True, call=self._calls, wall_limit=wall_limit)

    # -- internals ------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError:
                pass  # the child is gone; _wait reports it

    def _busy_seconds(self) -> float:
        with self._busy_lock:
            extra = time.monotonic() - self._busy_since if self._inflight else 0.0
            return self._busy_total + extra

    def _wait(self, limit: float, *, own_time: bool, call: int | None = None,
              until: str = "result", wall_limit: float | None = None) -> Outcome:
        """The reply to the message just sent. `seconds` is measured here, never taken from
        the child (which could lie about its run time)."""
        started = time.monotonic()
        busy_before = self._busy_seconds()

        def took() -> float:
            elapsed = time.monotonic() - started
            return elapsed - (self._busy_seconds() - busy_before) if own_time else elapsed

        while True:
            if self._cancel.is_set():
                self.kill()
                raise Cancelled()
            try:
                message = self._replies.get(timeout=0.05)
            except queue.Empty:
                elapsed = took()
                if elapsed > limit:
                    self.kill()
                    return Outcome(error=f"timed out after {limit:g} s", seconds=elapsed)
                if wall_limit is not None and time.monotonic() - started > wall_limit:
                    self.kill()
                    return Outcome(error=f"ran past its wall-clock limit of {wall_limit:g} s (LM "
                                         f"and utility waits included; own time {elapsed:.1f} s)",
                                   seconds=elapsed)
                continue
            op = message.get("op")
            if op in ("result", "error") and message.get("n") != call:
                self.kill()
                return Outcome(error="sandbox protocol violation (a reply to another call)",
                               seconds=took())
            if op == "loaded" and call is None:
                return Outcome()
            if op == "ready" and until == "ready" and message.get("n") == call:
                return Outcome(seconds=took())
            if op == "result":
                return Outcome(value=message.get("value"), seconds=took())
            if op == "error":
                return Outcome(error=str(message.get("error"))[:1000], seconds=took())
            if op == "fault":  # found by the reader: the child is done for
                self.kill()
                return Outcome(error=str(message.get("error")), seconds=took())
            if op == "eof":
                self.kill()
                return Outcome(error=self._death_reason())
            self.kill()
            return Outcome(error=f"sandbox protocol violation ({op!r})")

    def _death_reason(self) -> str:
        code = self._run.wait_status(5) if self._run is not None else None
        tail = self.output_tail(300).strip().splitlines()
        last = f": {tail[-1]}" if tail else ""
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return f"sandbox process killed by {name}{last}"
        if code is None:
            return f"sandbox process stopped answering{last}"
        return f"sandbox process exited (code {code}){last}"

    def _read(self) -> None:
        stream = self._sock.makefile("rb")
        try:
            while True:
                line = stream.readline(MAX_MESSAGE + 1)
                if not line:
                    break
                if len(line) > MAX_MESSAGE:
                    self._replies.put({"op": "fault", "error": f"reply too large (over {MAX_MESSAGE >> 20} MB)"})
                    break
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError):
                    self._replies.put({"op": "fault", "error": "sandbox protocol violation (not a JSON object)"})
                    break
                if message.get("op") == "rpc" and self._rpc is not None:
                    if not self._rpc_slots.acquire(blocking=False):
                        self._send({"op": "rpc_error", "id": message.get("id"),
                                    "error": f"too many concurrent calls (at most {MAX_RPC_IN_FLIGHT})"})
                        continue
                    with self._busy_lock:  # counted before its thread starts (see wait_rpcs)
                        if self._inflight == 0:
                            self._busy_since = time.monotonic()
                        self._inflight += 1
                    threading.Thread(target=self._serve, args=(message,), daemon=True,
                                     name="sandbox-rpc").start()
                else:
                    self._replies.put(message)
        except OSError:
            pass
        self._replies.put({"op": "eof"})

    def _serve(self, message: dict[str, Any]) -> None:
        try:
            method = str(message.get("method"))
            params = message.get("params")
            result = self._rpc(method, params if isinstance(params, dict) else {})
            reply = {"op": "rpc_result", "id": message.get("id"), "result": result}
        except Cancelled:
            reply = {"op": "rpc_error", "id": message.get("id"), "error": "run cancelled"}
        except Exception as exc:  # budget exceeded, bad arguments: the improver sees an exception
            reply = {"op": "rpc_error", "id": message.get("id"), "error": str(exc)}
        finally:
            with self._busy_lock:
                self._inflight -= 1
                if self._inflight == 0:
                    self._busy_total += time.monotonic() - self._busy_since
                    self._idle.notify_all()
            self._rpc_slots.release()
        self._send(reply)

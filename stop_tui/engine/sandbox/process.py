"""The engine side of one sandboxed program: spawn, limit, talk, kill.

Each `Sandbox` is one fresh process forked by the warm, confined zygote of the pool (see
pool.py and isolation.py: bubblewrap or the kernel fallback, an unprivileged uid per run,
rlimits, a subreaper that kills everything the run starts). It talks JSON lines over a
socketpair; replies are parsed as JSON and validated; nothing from the child is ever unpickled
or executed here. Time limits are enforced here, by killing the run through the zygote.

The thread that waits for a reply reads the socket itself (no reader thread to hand each reply
over: that was a wake-up per message, on a loaded machine the largest part of a call's cost);
an improver's proxy calls are served from there, each in a thread of its own.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stop_tui.engine.candidate_rng import Seeds
from stop_tui.engine.errors import Cancelled
from stop_tui.engine.sandbox import tempdirs, trace
from stop_tui.engine.sandbox.isolation import SAFE_ENV  # noqa: F401  (re-exported)
from stop_tui.engine.sandbox.pool import Pool, PoolError, Run, default_pool

MAX_MESSAGE = 32 * 1024 * 1024  # bytes per reply line
# Bytes asked of one read. recv(n) makes an n-byte object first: at 1 MiB that is a fresh mmap
# (and its unmapping) per read, 10-30 us of a call whose round trip is ~150 us; a longer
# message takes several reads.
READ_SIZE = 1 << 16
KILL_GRACE = 1.0  # seconds past a call's time limit before the run is killed
STAGE_BASE = 0.01  # seconds honest staging of a call's inputs may take, uncharged, plus:
STAGE_RATE = 2e6  # bytes of input per uncharged second (parsing them in the child, under load)
LOAD_TIMEOUT = 10.0  # seconds for the program's top-level code (imports, definitions)
CLOSE_GRACE = 0.2  # seconds a run gets to exit by itself once the engine hangs up
MAX_RPC_IN_FLIGHT = 64  # concurrent proxy calls one improver may have open
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # (Linux's number)

RpcHandler = Callable[[str, dict[str, Any]], Any]


class CancelFlag(Protocol):
    """What stops a run: a threading.Event, or an improver run's RunCancel (improver.py)."""

    def is_set(self) -> bool: ...


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


def encode(value: Any, blobs: list[bytes]) -> Any:
    """Inputs for the child: numpy arrays travel tagged and come back as arrays. Numeric ones
    travel as their raw bytes, appended to `blobs` (sent after the message's line: no base64,
    no JSON string to scan on either side), others as lists of numbers."""
    if hasattr(value, "dtype") and hasattr(value, "tolist") and hasattr(value, "shape"):
        if value.shape == ():
            return value.item()
        if value.dtype.kind in "biufc" and value.dtype.byteorder in "=|<":
            blobs.append(value.tobytes(order="C"))
            return {"__ndarray_blob__": len(blobs) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, list | tuple):
        return [encode(v, blobs) for v in value]
    return value


def _tagged(value: Any) -> bool:
    """Whether encoded inputs hold tagged arrays (else the child has nothing to decode)."""
    if isinstance(value, dict):
        return "__ndarray_blob__" in value or "__ndarray__" in value
    if isinstance(value, list):
        return any(isinstance(v, dict | list) and _tagged(v) for v in value)
    return False


def rng_state(rng: tuple | Seeds | None) -> dict | None:
    """JSON form of (random.Random, np.random.RandomState) states, or of the Seeds of derived
    generators (candidate_rng), for the child to adopt."""
    if rng is None:
        return None
    if isinstance(rng, Seeds):
        return {"seeds": {"random": rng.py, "numpy": list(rng.np) if rng.np is not None else None}}
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


class _Staging:
    """One call's clock (Sandbox.call): staging from `started` to `at` (when the run said its
    inputs were staged), `allowance` of it free; then the call, within `time_limit`."""

    def __init__(self, started: float, allowance: float, time_limit: float) -> None:
        self.started, self.allowance, self.time_limit = started, allowance, time_limit
        self.at: float | None = None

    def charged(self) -> float:
        """Staging past its allowance (on the run's clock)."""
        return max(0.0, (self.at if self.at is not None else time.monotonic()) - self.started
                   - self.allowance)

    def over(self) -> bool:
        """Staging alone took the whole limit."""
        return self.at is not None and self.charged() > self.time_limit

    def limit(self) -> float:
        """Seconds from `started` after which the run is killed."""
        if self.at is None:
            return self.time_limit + KILL_GRACE + self.allowance
        return self.at - self.started + self.time_limit + KILL_GRACE - self.charged()

    def seconds(self, arrived: float) -> float:
        """The run's time for a result that arrived at `arrived`."""
        return self.charged() + max(0.0, arrived - (self.at if self.at is not None else arrived))

    def overrun(self) -> Outcome:
        return Outcome(error=f"timed out after {self.time_limit:g} s (staging its inputs took "
                             f"{self.at - self.started:.2f} s)", seconds=self.charged())

    def timed_out(self) -> Outcome:
        elapsed = time.monotonic() - self.started
        if self.at is None:
            return Outcome(error=f"timed out after {self.time_limit + KILL_GRACE:g} s (staging "
                                 "its inputs)", seconds=elapsed - self.allowance)
        return Outcome(error=f"timed out after {self.time_limit + KILL_GRACE:g} s",
                       seconds=self.charged() + time.monotonic() - self.at)


class Sandbox:
    """One untrusted program in one fresh sandboxed process. Use as a context manager."""

    def __init__(self, source: str, entry: str, *, limits: Limits = Limits(),
                 rpc: RpcHandler | None = None, preload: tuple[str, ...] = ("numpy",),
                 cancel: CancelFlag | None = None, pool: Pool | None = None) -> None:
        self.source, self.entry, self.limits = source, entry, limits
        self._rpc, self._preload = rpc, preload
        self._cancel = cancel or threading.Event()
        self._pool = pool
        self._run: Run | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()  # what the run sent that is not a whole line yet
        self._scanned = 0  # how much of it holds no newline
        self._received = 0  # CLOCK_MONOTONIC ns of the last read from the socket
        self._ended = False  # the run hung up (or broke the protocol): nothing more is read
        self._notice: socket.socket | None = None  # the engine's end of the notice socket
        self._send_lock = threading.Lock()
        self._busy_lock = threading.Lock()
        self._idle = threading.Condition(self._busy_lock)  # notified when no proxy call is open
        self._inflight = 0
        self._busy_since = 0.0
        self._busy_total = 0.0
        self._rpc_slots = threading.BoundedSemaphore(MAX_RPC_IN_FLIGHT)
        self._dead = False
        self._calls = 0  # call numbers: a reply must name the call it answers
        self._trace = trace.active()  # a bench asks where the time goes (trace.py)
        self._sent = 0  # when the last message went out (ns)
        self._stamps = (0, 0, 0)  # tracing: the last reply's arrival, parsing, pick-up (ns)
        self._reply_marks: Any = None  # tracing: the marks the run sent with it
        made = time.monotonic_ns()
        # Engine-side only (the run never sees this folder): the run's stdout and stderr.
        self.scratch = tempdirs.make("out")
        self.load_error: str | None = None
        if self._trace is not None:
            self._trace.add("engine: the run's output folder (make, remove)", time.monotonic_ns() - made)

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        begun = time.monotonic_ns()
        parent, child = socket.socketpair()
        self._sock = parent
        # The run's staging notices: datagrams the kernel stamps as they are sent.
        self._notice, notice = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notice.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        out_fd = os.open(self.scratch / "output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        ours = [child.close, notice.close, lambda: os.close(out_fd)]  # the run's ends, our copies
        load = {"op": "load", "source": self.source, "entry": self.entry,
                "preload": list(self._preload),
                "memory_mb": self.limits.memory_mb, "output_kb": self.limits.output_kb,
                **({"trace": True} if self._trace is not None else {})}
        started = time.monotonic()

        def let_go() -> None:
            while ours:
                ours.pop()()

        def send_load() -> None:
            # The program goes out with the spawn request, not after its answer: the run finds
            # it waiting when it starts. (Our copies of its ends are closed first: a run that
            # never comes makes this send fail at once, not wait for a reader.)
            let_go()
            self._send(load, timeout=self.limits.load_seconds)

        try:
            pool = self._pool or default_pool()
            self._run = pool.spawn((child.fileno(), out_fd, notice.fileno()), self.limits.for_child(),
                                   sent=send_load)
        except PoolError as exc:
            self.load_error = f"sandbox unavailable: {exc}"
            self._dead = True
            return
        finally:
            let_go()
        reply = self._wait(self.limits.load_seconds, own_time=False, started=started)
        if self._trace is not None:
            self._traced(reply, trace.RUN_SPANS | trace.LOAD_SPANS, begun, "load")
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
        begun = time.monotonic_ns()
        run = self._run
        if run is not None and not self._dead and self._sock is not None:
            # Hang up: a well-behaved child exits by itself (the zygote then sweeps whatever it
            # left); anything still there CLOSE_GRACE later is killed by the zygote. Nothing
            # here waits for that.
            self._dead = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            run.release(CLOSE_GRACE)
        else:
            self.kill()
        for sock in (self._sock, self._notice):
            if sock is not None:
                sock.close()
        if self._trace is not None:
            self._trace.add("close: hang up and release the run (its exit and sweep are off the wait)", time.monotonic_ns() - begun)
        removing = time.monotonic_ns()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._trace is not None:
            self._trace.add("engine: the run's output folder (make, remove)", time.monotonic_ns() - removing)

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
        begun = time.monotonic_ns()
        self._calls += 1
        # Two steps, one trip: the child stages the inputs (parses, decodes, sets the RNG),
        # says so on its notice socket and calls at once. Staging runs in the candidate's
        # process, where its code could have hooked the decoding and computed there. So staging
        # gets an allowance for what honest staging costs (STAGE_BASE + the input's size at
        # STAGE_RATE: moving a big input is not charged) and whatever it takes beyond is the
        # run's time, like the call's own. Both are measured here: from the send, to the
        # kernel's stamp of the notice, to the result's arrival (the child cannot under-report
        # them: a notice sent late is staging past the allowance, one sent early or none is
        # call time); a run whose staging alone passes its limit is stopped there and its
        # result, if any, is not used. The engine does not wake up for the notice.
        blobs: list[bytes] = []
        encoded = encode(list(args), blobs)
        line = self._line({"op": "call", "n": self._calls, "args": encoded,
                           "plain": not _tagged(encoded), "rng": rng_state(rng), "seed": seed,
                           "stage": True, **({"blobs": [len(b) for b in blobs]} if blobs else {}),
                           **({"trace": True} if self._trace is not None else {})})
        line += b"".join(blobs)  # (the arrays' bytes follow the line)
        staging = _Staging(time.monotonic(), STAGE_BASE + len(line) / STAGE_RATE, time_limit)
        self._send(line, timeout=staging.limit(), begun=begun)  # (handing the inputs over is staging)
        out = self._wait_call(staging, self._calls)
        if self._trace is not None:
            self._traced(out, trace.CALL_SPANS, self._sent, "call")
        return out

    def improve(self, spec: dict[str, Any], time_limit: float, *, wall_limit: float | None = None,
                seed: int | None = None) -> Outcome:
        """Run `improve_algorithm` with proxies; `time_limit` counts the improver's own time only
        (time the engine spends serving its LM and utility calls is excluded); `wall_limit`, if
        given, counts everything (a call kept in flight does not stop that clock)."""
        if not self.alive():
            return Outcome(error=self.load_error or "sandbox is not running")
        self._calls += 1
        started = time.monotonic()
        self._send({"op": "call", "n": self._calls, "improve": spec, "seed": seed},
                   timeout=wall_limit or time_limit)
        return self._wait(time_limit, own_time=True, call=self._calls, wall_limit=wall_limit,
                          started=started)

    # -- internals ------------------------------------------------------------------------
    @staticmethod
    def _line(message: dict[str, Any]) -> bytes:
        return (json.dumps(message, separators=(",", ":")) + "\n").encode()

    def _send(self, message: dict[str, Any] | bytes, *, timeout: float | None = None,
              begun: int | None = None) -> int:
        """Send one message (or its line); returns its size in bytes. `timeout`: seconds the
        run gets to take it (nothing reads what it sends meanwhile: a run that writes instead
        of reading would otherwise hold the engine here for good); then the reply's wait
        finds out what is wrong. Tracing, the time from `begun` to the send is the input
        encoding."""
        data = message if isinstance(message, bytes) else self._line(message)
        with self._send_lock:
            self._sent = time.monotonic_ns()
            if begun is not None and self._trace is not None:
                self._trace.add("call: input encoding in the engine (arrays, RNG, JSON)", self._sent - begun)
            try:
                self._sock.settimeout(timeout)
                self._sock.sendall(data)
            except OSError:
                pass  # the child is gone, or took too long to read: _wait reports it
        return len(data)

    def _traced(self, outcome: Outcome, names: dict[str, str], start: int, kind: str) -> None:
        """Add a reply's marks (the run's) and the engine's own stamps to the recorder."""
        recorder, (arrived, parsed, got) = self._trace, self._stamps
        last = recorder.marks(self._reply_marks, names, start)
        self._stamps, self._reply_marks = (0, 0, 0), None
        if not arrived or outcome.error is not None:
            return
        if last is not None:
            recorder.add(f"{kind}: the reply reaches the engine (JSON, socket)", arrived - last)
        recorder.add(f"{kind}: JSON parsing and checks in the engine", parsed - arrived)
        recorder.add(f"{kind}: handed to the engine's waiting thread", got - parsed)
        recorder.add(f"{kind}: engine side, the rest", time.monotonic_ns() - got)

    def _busy_seconds(self) -> float:
        with self._busy_lock:
            extra = time.monotonic() - self._busy_since if self._inflight else 0.0
            return self._busy_total + extra

    def _wait(self, limit: float, *, own_time: bool, call: int | None = None,
              wall_limit: float | None = None, started: float | None = None) -> Outcome:
        """The reply to the message just sent (sent at `started`, a monotonic time, if given).
        `seconds` is measured here, to the stamp of the reply's arrival, never taken from the
        child (which could lie about its run time)."""
        started = time.monotonic() if started is None else started
        busy_before = self._busy_seconds()

        def took(at: float | None = None) -> float:
            elapsed = (time.monotonic() if at is None else at) - started
            return elapsed - (self._busy_seconds() - busy_before) if own_time else elapsed

        while True:
            if self._cancel.is_set():
                self.kill()
                raise Cancelled()
            got = self._next(0.05)
            if got is None:
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
            return self._reply(got, call, took(got[0] / 1e9))

    def _wait_call(self, staging: _Staging, call: int) -> Outcome:
        """A call's reply, on its staging clock (see call()). Its staging notice is read, not
        waited for: with the result, or while nothing else comes."""
        while True:
            if self._cancel.is_set():
                self.kill()
                raise Cancelled()
            got = self._next(0.05)
            if got is None:
                if staging.at is None:
                    self._read_notice(staging, call)
                if staging.over():
                    self.kill()
                    return staging.overrun()
                if time.monotonic() - staging.started > staging.limit():
                    self.kill()
                    return staging.timed_out()
                continue
            arrived = got[0] / 1e9
            if staging.at is None and got[2].get("op") in ("result", "error"):
                self._read_notice(staging, call)
                if staging.at is None:  # no notice: staging ran to the result
                    staging.at = arrived
                if staging.over():
                    self.kill()
                    return staging.overrun()
            return self._reply(got, call, staging.seconds(arrived))

    def _read_notice(self, staging: _Staging, call: int) -> None:
        """Read the run's staging notices without waiting; the one for `call` sets `staging.at`
        to the kernel's stamp of its sending (as a monotonic time, within [started, now])."""
        notice = self._notice
        for _ in range(64):  # (a run that floods its notices only delays its own)
            try:
                data, ancillary, _, _ = notice.recvmsg(32, socket.CMSG_SPACE(16), socket.MSG_DONTWAIT)
            except OSError:  # none waiting (BlockingIOError), or closed
                return
            if data != str(call).encode():
                continue
            now = time.monotonic()
            sent = now
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    realtime = seconds * 10**9 + nanoseconds
                    sent = (realtime - time.time_ns()) / 1e9 + now
            staging.at = min(max(sent, staging.started), now)
            return

    def _reply(self, got: tuple[int, int, dict[str, Any]], call: int | None, seconds: float) -> Outcome:
        """The outcome a message from the run makes (a reply, or what is wrong with it)."""
        arrived, parsed, message = got
        if self._trace is not None:
            self._stamps = (arrived, parsed, time.monotonic_ns())
            self._reply_marks = message.get("trace")
        op = message.get("op")
        if op in ("result", "error") and message.get("n") != call:
            self.kill()
            return Outcome(error="sandbox protocol violation (a reply to another call)",
                           seconds=seconds)
        if op == "loaded" and call is None:
            return Outcome()
        if op == "result":
            return Outcome(value=message.get("value"), seconds=seconds)
        if op == "error":
            return Outcome(error=str(message.get("error"))[:1000], seconds=seconds)
        if op == "fault":  # found reading the socket: the child is done for
            self.kill()
            return Outcome(error=str(message.get("error")), seconds=seconds)
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

    def _next(self, timeout: float) -> tuple[int, int, dict[str, Any]] | None:
        """The run's next message as (arrived, parsed, message): CLOCK_MONOTONIC ns when the
        read that completed its line returned and when it was parsed (the engine's clock runs
        on these). None when nothing came within `timeout` seconds. After the run hung up or
        broke the protocol, every call answers `eof`. Proxy calls are served on the way."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._buffer)
                if self._scanned > MAX_MESSAGE:
                    return self._fault(f"reply too large (over {MAX_MESSAGE >> 20} MB)")
                if self._ended:
                    return self._received, time.monotonic_ns(), {"op": "eof"}
                if not self._fill(deadline - time.monotonic()):
                    return None
                continue
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            self._scanned = 0
            if end > MAX_MESSAGE:
                return self._fault(f"reply too large (over {MAX_MESSAGE >> 20} MB)")
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError):
                return self._fault("sandbox protocol violation (not a JSON object)")
            if message.get("op") == "rpc" and self._rpc is not None:
                self._dispatch(message)
                continue
            return self._received, time.monotonic_ns(), message

    def _fill(self, timeout: float) -> bool:
        """Read what the run sent (waiting at most `timeout` s); False if nothing came."""
        try:
            ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
            if not ready:
                return False
            data = self._sock.recv(READ_SIZE)
        except (OSError, ValueError):  # closed or shut down here (a kill)
            data = b""
        self._received = time.monotonic_ns()
        if data:
            self._buffer += data
        else:
            self._ended = True
        return True

    def _fault(self, error: str) -> tuple[int, int, dict[str, Any]]:
        """The run broke the protocol: it is done for (nothing more of it is read)."""
        self._ended = True
        self._buffer.clear()
        self._scanned = 0
        return self._received, time.monotonic_ns(), {"op": "fault", "error": error}

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Serve a proxy call in a thread of its own (at most MAX_RPC_IN_FLIGHT at once)."""
        if not self._rpc_slots.acquire(blocking=False):
            self._send({"op": "rpc_error", "id": message.get("id"),
                        "error": f"too many concurrent calls (at most {MAX_RPC_IN_FLIGHT})"})
            return
        with self._busy_lock:  # counted before its thread starts (see wait_rpcs)
            if self._inflight == 0:
                self._busy_since = time.monotonic()
            self._inflight += 1
        threading.Thread(target=self._serve, args=(message,), daemon=True, name="sandbox-rpc").start()

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

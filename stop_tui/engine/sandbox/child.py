"""The sandbox child: runs ONE untrusted program and talks to the engine over a socket.

Normally forked from the warm zygote (zygote.py calls serve() in a fresh process per run);
it can also be started by path with `python -I child.py FD`. It imports nothing from
stop_tui and only the standard library (and numpy, preloaded). Messages
are JSON lines. The engine sends `load`, then `call` (a solution's entry function) or
`improve` (an improver's `improve_algorithm`). An improver reaches the LM and its utility only
through the proxies below, which send `rpc` messages and wait for the engine's answer.

The main thread reads the engine's messages itself (no thread hand-off per call) until an
improver's run starts: from then on a reader thread does, to route the answers of its proxy
calls while `improve_algorithm` runs.
"""

import importlib.util
import json
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
import traceback

_send_lock = threading.Lock()
_pending = {}
_pending_lock = threading.Lock()
_next_id = [0]
_inbox = queue.Queue()


def _send(sock, message):
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    with _send_lock:
        sock.sendall(data)


def _read(stream):
    """The engine's next message (None at the end): a JSON line, then the raw bytes of the
    arrays it carries when it says how many (`blobs`: their sizes), read into one writable
    buffer; `blobs` then holds a view of each."""
    line = stream.readline()
    if not line:
        return None
    received = time.monotonic_ns()
    message = json.loads(line)
    sizes = message.get("blobs")
    if sizes:
        data = memoryview(bytearray(sum(sizes)))
        got = 0
        while got < len(data):
            count = stream.readinto(data[got:])
            if not count:
                return None
            got += count
        blobs, at = [], 0
        for size in sizes:
            blobs.append(data[at:at + size])
            at += size
        message["blobs"] = blobs
    if message.get("trace"):  # the engine asked where the time goes (its trace.py)
        message["trace"] = [["received", received], ["parsed", time.monotonic_ns()]]
    return message


class _Messages:
    """The engine's messages, read by the main thread until `hand_over()` starts the reader."""

    def __init__(self, sock):
        self.stream = sock.makefile("rb")
        self.reader = None

    def next(self):
        if self.reader is not None:
            return _inbox.get()
        message = _read(self.stream)
        return {"op": "eof"} if message is None else message

    def hand_over(self):
        if self.reader is None:
            self.reader = threading.Thread(target=_reader, args=(self.stream,), daemon=True)
            self.reader.start()


def _reader(stream):
    while (message := _read(stream)) is not None:
        if message.get("op") in ("rpc_result", "rpc_error"):
            with _pending_lock:
                slot = _pending.pop(message["id"], None)
            if slot is not None:
                slot.put(message)
        else:
            _inbox.put(message)
    _inbox.put({"op": "eof"})
    with _pending_lock:
        for slot in _pending.values():
            slot.put({"op": "rpc_error", "error": "engine connection closed"})


def _rpc(sock, method, **params):
    slot = queue.Queue(maxsize=1)
    with _pending_lock:
        _next_id[0] += 1
        call_id = _next_id[0]
        _pending[call_id] = slot
    _send(sock, {"op": "rpc", "id": call_id, "method": method, "params": params})
    reply = slot.get()
    if reply["op"] == "rpc_error":
        raise Exception(reply["error"])
    return reply["result"]


class LanguageModelProxy:
    """The paper's `language_model`: every call goes to the engine, which counts and enforces."""

    def __init__(self, sock, budget, max_responses_per_call):
        self._sock = sock
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call

    def batch_prompt(self, expertise, message_batch, temperature=0.7):
        try:
            message_batch = list(message_batch)
        except Exception:
            return []
        return _rpc(self._sock, "lm.batch_prompt", expertise=expertise,
                    messages=message_batch, temperature=temperature)

    def prompt(self, expertise, message, n_responses=1, temperature=0.7):
        return _rpc(self._sock, "lm.prompt", expertise=expertise, message=message,
                    n_responses=n_responses, temperature=temperature)


class UtilityProxy:
    """The paper's `utility`: a callable with `.str`, `.budget` and `.uses`, scored by the engine."""

    def __init__(self, sock, text, budget):
        self._sock = sock
        self.str = text
        self.budget = budget

    @property
    def uses(self):
        return _rpc(self._sock, "utility.uses")

    def __call__(self, solution, *args, **kwargs):
        if solution is not None and not isinstance(solution, str):
            solution = str(solution)
        return float(_rpc(self._sock, "utility", solution=solution))


def _to_plain(value, depth=0):
    """Candidate results become plain JSON data (numpy arrays/scalars converted)."""
    if depth > 50:
        raise ValueError("result nested too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "tolist") and callable(value.tolist):
        return _to_plain(value.tolist(), depth + 1)
    if isinstance(value, list | tuple):
        return [_to_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):
        return _to_plain(value.item(), depth + 1)
    raise TypeError(f"cannot return a {type(value).__name__}")


def _decode(value, blobs=()):
    """Inputs as the engine encoded them (process.encode): tagged arrays become arrays (those
    sent as raw bytes are writable views of the message's buffer, `blobs`)."""
    if isinstance(value, dict) and "__ndarray_blob__" in value:
        import numpy as np

        blob = blobs[value["__ndarray_blob__"]]
        return np.frombuffer(blob, dtype=value["dtype"]).reshape(value["shape"])
    if isinstance(value, dict) and "__ndarray__" in value:
        import numpy as np

        return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
    if isinstance(value, list):
        return [_decode(v, blobs) for v in value]
    return value


def _set_rng(rng):
    import random

    seeds = rng.get("seeds")
    if seeds is not None:  # generators the engine derived, as the seeds they are made from
        if seeds.get("random") is not None:
            random.seed(int(seeds["random"]))
        if seeds.get("numpy") is not None:
            import numpy as np

            np.random.seed(np.array(seeds["numpy"], dtype=np.uint32))
        return
    if rng.get("random") is not None:
        version, state, gauss = rng["random"]
        if isinstance(state, str):
            import base64
            import struct

            raw = base64.b64decode(state)
            state = struct.unpack(f"<{len(raw) // 8}Q", raw)
        random.setstate((version, tuple(state), gauss))
    if rng.get("numpy") is not None:
        import numpy as np

        name, keys, pos, has_gauss, cached = rng["numpy"]
        if isinstance(keys, str):
            import base64

            keys = np.frombuffer(base64.b64decode(keys), dtype="<u4").astype(np.uint32)
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def warm_up():
    """In a spare, confined and not yet handed its run (zygote.new_process): the call path once,
    on made-up data (a message parsed, generators seeded, an array decoded, a result encoded),
    so that what a fresh process pays on first use (the copy-on-write of the pages it shares
    with the zygote, the first seeding of numpy's generators) is paid in advance, off the
    engine's wait. No program has been given yet; the generators are put back as they were, so
    the run starts exactly as it would without this."""
    import random

    try:
        import numpy as np
    except ImportError:
        np = None
    state = random.getstate()
    np_state = np.random.get_state() if np is not None else None
    try:
        call = {"op": "call", "n": 0, "plain": False, "blobs": [32],
                "args": [{"__ndarray_blob__": 0, "dtype": "<i8", "shape": [2, 2]}, [1.5, "x"]],
                "rng": {"seeds": {"random": 2**255 + 1, "numpy": list(range(8)) if np is not None else None}}}
        message = json.loads(json.dumps(call, separators=(",", ":")))
        _set_rng(message["rng"])
        args = _decode(message["args"], (memoryview(bytearray(32)),)) if np is not None else message["args"]
        value = _to_plain(args[0].sum(axis=0) if np is not None else args)
        json.dumps({"op": "result", "n": 0, "value": value, "seconds": 0.0}, separators=(",", ":"))
    finally:
        random.setstate(state)
        if np is not None:
            np.random.set_state(np_state)


def _seed(seed):
    import random

    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def _limits(memory_mb, output_kb):
    """Lower the rlimits (the zygote already set them for a forked run; lowering is idempotent)."""
    for which, size in ((resource.RLIMIT_CORE, 0),
                        (resource.RLIMIT_AS, (memory_mb or 0) * 1024 * 1024),
                        (resource.RLIMIT_FSIZE, (output_kb or 0) * 1024)):
        if size or which == resource.RLIMIT_CORE:
            try:
                soft, hard = resource.getrlimit(which)
                if hard != resource.RLIM_INFINITY:
                    size = min(size, hard)
                resource.setrlimit(which, (size, size))
            except (ValueError, OSError):
                pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail instead of killing


def _load_helpers(path):
    spec = importlib.util.spec_from_file_location("helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["helpers"] = module


def _error_text(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f" (line {f.lineno})" for f in reversed(tb) if f.filename == "<candidate>"), "")
    return f"{type(exc).__name__}: {exc}"[:500] + where


def _mark(marks, name):
    if marks is not None:
        marks.append([name, time.monotonic_ns()])


def serve(sock, marks=None, notice=None):
    """Load the program the engine sends and answer its calls until the engine hangs up.
    `marks`: the run's set-up so far ([name, CLOCK_MONOTONIC ns], from the zygote), sent back
    with the load's reply, with the load's own, when the engine asks (its trace.py).
    `notice`: a datagram socket on which a call says its inputs are staged (the kernel stamps
    the time; the engine reads it with the result, without waking up for it)."""
    messages = _Messages(sock)
    setup = messages.next()
    if setup.get("op") != "load":
        return
    marks = (marks or []) + (setup.get("trace") or []) if setup.get("trace") else None
    _limits(setup.get("memory_mb"), setup.get("output_kb"))
    if setup.get("helpers"):
        _load_helpers(setup["helpers"])
    for module in setup.get("preload", []):
        __import__(module)
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        code = compile(setup["source"], "<candidate>", "exec")
        exec(code, namespace)
        entry = namespace[setup["entry"]]
        if not callable(entry):
            raise TypeError(f"{setup['entry']} is not a function")
    except KeyError:
        _send(sock, {"op": "error", "error": f"the program defines no `{setup['entry']}`"})
        return
    except BaseException as exc:  # SyntaxError, SystemExit, anything the import does
        _send(sock, {"op": "error", "error": _error_text(exc)})
        return
    _mark(marks, "loaded")
    _send(sock, {"op": "loaded", **({"trace": marks} if marks is not None else {})})
    while True:
        message = messages.next()
        if message["op"] != "call":
            return
        marks = message.get("trace") or None
        _mark(marks, "dequeued")
        if message.get("seed") is not None:
            _seed(message["seed"])
        if message.get("rng"):
            _set_rng(message["rng"])
        _mark(marks, "rng")
        if message.get("improve"):
            messages.hand_over()  # its proxies' answers arrive while it runs
            spec = message["improve"]
            args = [spec["initial_solution"],
                    UtilityProxy(sock, spec["utility_str"], spec["utility_budget"]),
                    LanguageModelProxy(sock, spec["lm_budget"], spec["max_responses_per_call"])]
        else:
            args = message["args"] if message.get("plain") else _decode(message["args"], message.get("blobs") or ())
            _mark(marks, "decoded")
            if message.get("stage") and notice is not None:
                # Inputs decoded and the RNG set: say so, and call at once. The kernel stamps
                # this notice when it is sent: staging (this process's code, the candidate's
                # included, ran the decoding; the engine allows for what honest decoding
                # costs) is on the engine's clock up to it, the call from it to the result.
                try:
                    notice.send(str(message.get("n")).encode())
                except OSError:
                    pass
        started = time.perf_counter()
        try:
            value = entry(*args)
            seconds = time.perf_counter() - started
            _mark(marks, "ran")
            reply = {"op": "result", "n": message.get("n"), "value": _to_plain(value), "seconds": seconds}
            _mark(marks, "encoded")
        except BaseException as exc:
            reply = {"op": "error", "n": message.get("n"), "error": _error_text(exc),
                     "seconds": time.perf_counter() - started}
        if marks is not None:
            reply["trace"] = marks
        try:
            _send(sock, reply)
        except (TypeError, ValueError, RecursionError) as exc:
            _send(sock, {"op": "error", "n": message.get("n"), "error": f"unusable result: {exc}",
                         "seconds": reply["seconds"]})


def main():
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    try:
        main()
    finally:
        sys.stdout.flush()
        os._exit(0)

"""The embedded model's worker process: one llama.cpp model, one generation at a time.

Native code that crashes (a segfault in a CPU kernel, the OOM killer) takes only this process
with it; the engine (local_backend.py) sees the pipe close, records a failed completion that
names the cause, and starts a new worker for the next request.

  python -m stop_tui.engine.lm.local_worker      (started by LocalBackend, never by hand)

Protocol, both ways over stdin/stdout: a message is a 4-byte big-endian length, then that many
bytes of UTF-8 JSON (one object). The engine sends `load` first; the worker answers `ready`
(what it loaded and with which options) or `error` and exits. Then each `chat` is answered by
`done` (text, finish reason, tokens) or `failed` (llama-cpp-python refused it, e.g. a prompt
longer than the context). The worker's own stdout is moved to stderr at start, so nothing
native can write into the protocol. EOF on stdin ends the worker; the engine's death kills it
(its parent-death signal, armed before exec: engine/lifetime.py).

The engine says whether to use llama.cpp's extra buffer types (its repacked CPU weights and
its AMX kernels, which fault with SIGSEGV at `ldtilecfg` on some cloud CPUs that advertise AMX;
local_backend.py decides). llama-cpp-python 0.3 has no keyword for
`llama_model_params.use_extra_bufts`, so the worker sets the field on the params struct `Llama`
builds, before the model loads (`model_params_with`), and reports the value the model was
loaded with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 << 20  # a prompt or a reply larger than this is a protocol fault
EXTRA_BUFTS_ENV = "STOP_TUI_LOCAL_EXTRA_BUFTS"


class ProtocolError(Exception):
    """The other side sent something that is not a message (or too large a one)."""


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    body = json.dumps(message, ensure_ascii=False).encode()
    data = memoryview(HEADER.pack(len(body)) + body)
    while data:  # a raw pipe may take part of it
        data = data[stream.write(data):]
    stream.flush()


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at EOF (the other side is gone)."""
    header = _read_exact(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"message of {size} bytes (at most {MAX_MESSAGE})")
    body = _read_exact(stream, size)
    if body is None:
        return None
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def model_params_with(**fields: Any) -> Iterator[None]:
    """While `Llama(...)` runs, the model params it starts from have `fields` set. Llama.__init__
    takes its params from llama_cpp.llama_model_default_params() and passes them, unchanged
    apart from its own keywords, to llama_model_load_from_file. One model loads in this
    process, in this thread, so the swap is seen by that load only."""
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def defaults() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    native.llama_model_default_params = defaults
    try:
        yield
    finally:
        native.llama_model_default_params = original


def _load(request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Load the model the engine asked for; raises ImportError, ValueError or RuntimeError."""
    from llama_cpp import Llama, __version__

    started = time.monotonic()
    extra_bufts = bool(request.get("extra_bufts", False))
    with model_params_with(use_extra_bufts=extra_bufts):
        llm = Llama(model_path=str(request["path"]), n_ctx=int(request["n_ctx"]),
                    n_threads=int(request["n_threads"]), n_threads_batch=int(request["n_threads"]),
                    verbose=False)
    info = {
        "path": str(request["path"]),
        "size": os.path.getsize(request["path"]),
        "n_ctx": int(llm.n_ctx()),
        "n_threads": int(llm.n_threads),
        "use_extra_bufts": bool(llm.model_params.use_extra_bufts),  # what the model loaded with
        "n_gpu_layers": int(llm.model_params.n_gpu_layers),
        "llama_cpp_python": __version__,
        "load_seconds": round(time.monotonic() - started, 4),
        "pid": os.getpid(),
    }
    return llm, info


def _chat(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        out = llm.create_chat_completion(
            messages=request["messages"], temperature=float(request["temperature"]),
            max_tokens=int(request["max_tokens"]), seed=request.get("seed"))
    except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the context
        return {"op": "failed", "error": str(exc)[:300]}
    choice = out["choices"][0]
    usage = out.get("usage") or {}
    return {"op": "done", "text": choice["message"].get("content"),
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0))}


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when this process ends
    inbound = os.fdopen(0, "rb", buffering=0)
    outbound = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever native code prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    request = read_message(inbound)
    if request is None or request.get("op") != "load":
        return 1
    try:
        llm, info = _load(request)
    except ImportError as exc:
        write_message(outbound, {"op": "error", "kind": "import", "error": str(exc)[:300]})
        return 0
    except (ValueError, RuntimeError, OSError) as exc:
        write_message(outbound, {"op": "error", "kind": "load", "error": str(exc)[:300]})
        return 0
    write_message(outbound, {"op": "ready", "info": info})
    while True:
        request = read_message(inbound)
        if request is None:
            return 0
        if request.get("op") != "chat":
            raise ProtocolError(f"unknown op {request.get('op')!r}")
        write_message(outbound, _chat(llm, request))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the engine closed our pipe: nothing left to answer
        os._exit(0)

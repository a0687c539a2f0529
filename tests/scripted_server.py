"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

It answers /v1/models and /v1/chat/completions with replies chosen by a `responder`
(request body, index of the choice within the request) -> text, reports `usage` it computes itself (so tests can
compare the engine's sums with the server's), can ignore `n` like llama.cpp's server, add
latency, and fail a fixed share of requests with 429 / 500.

Optional transport faults (off by default), drawn from their own generator (`fault_seed`):
`drop_rate` closes the connection without answering, `malformed_rate` answers 200 with a body
that is not JSON, `truncate_rate` cuts a 200 body short (the last two are billed: the server
did the work). `max_inflight` and `busy_wall` (seconds with at least one request in flight)
measure how busy the server was kept.

Real servers' ways (off by default): `models` is what /v1/models lists; with `ollama_names`
a listed `name:latest` is also served as `name` (Ollama's way), with `any_model` every name is
served (llama.cpp's server), otherwise a request for an unlisted model gets 404
model_not_found. `reasoning` acts like OpenAI's o-series / gpt-5: a temperature other than 1
is refused (400 unsupported_value) and usage reports `reasoning` extra reasoning tokens per
choice (in completion_tokens, and in completion_tokens_details.reasoning_tokens).

Broken servers, for every chat request: `broken="html"` (200, an HTML page), `"garbage"` (200,
JSON cut in the middle), `"shape"` (200, a JSON object that is not a completion), `"list"` (200,
`[1,2,3]`), `"500"` (always 500), `"hang"` (the connection is accepted and never answered,
until the server is closed); with `broken_after=N`, only once N chat requests were answered.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[dict[str, Any], int], str]  # (request body, choice index in it) -> text


def count_tokens(text: str) -> int:
    """The server's own token count: whitespace-separated words (deterministic)."""
    return len(text.split())


class ScriptedLMServer:
    def __init__(self, responder: Responder, *, model: str = "scripted", honour_n: bool = True,
                 latency: float = 0.0, fail_rate: float = 0.0, fail_seed: int = 0,
                 drop_rate: float = 0.0, malformed_rate: float = 0.0, truncate_rate: float = 0.0,
                 fault_seed: int = 1, retry_after: str | None = "0",
                 reject_max_tokens: bool = False, models: list[str] | None = None,
                 ollama_names: bool = False, any_model: bool = False, reasoning: int | None = None,
                 broken: str | None = None, broken_after: int = 0) -> None:
        self.responder = responder
        self.model = model
        self.honour_n = honour_n
        self.latency = latency
        self.fail_rate = fail_rate
        self._rng = random.Random(fail_seed)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # every chat request body received
        self.answered = 0
        self.failed = 0
        self.prompt_tokens = 0  # billed: only for answered requests
        self.completion_tokens = 0
        self.busy_seconds = 0.0
        self._counter = 0
        self.drop_rate, self.malformed_rate, self.truncate_rate = drop_rate, malformed_rate, truncate_rate
        self._fault_rng = random.Random(fault_seed)
        self.retry_after = retry_after  # the Retry-After header sent with 429 / 500
        self.reject_max_tokens = reject_max_tokens  # like newer OpenAI models: 400 for max_tokens
        self.faults = {"drop": 0, "malformed": 0, "truncate": 0}
        self.models = list(models) if models is not None else [model]
        self.ollama_names, self.any_model = ollama_names, any_model
        self.reasoning = reasoning  # reasoning tokens per choice; None: not a reasoning model
        self.reasoning_tokens = 0  # billed (inside completion_tokens)
        assert broken in (None, "html", "garbage", "shape", "list", "500", "hang"), broken
        self.broken = broken
        self.broken_after = broken_after
        self.closing = threading.Event()  # set on exit: hanging handlers return
        self.gets = 0  # GET requests (/models) received
        self.inflight = 0
        self.max_inflight = 0
        self.busy_wall = 0.0
        self._busy_since = 0.0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _enter(self) -> None:
        with self.lock:
            if self.inflight == 0:
                self._busy_since = time.monotonic()
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def _leave(self) -> None:
        with self.lock:
            self.inflight -= 1
            if self.inflight == 0:
                self.busy_wall += time.monotonic() - self._busy_since

    def _fault(self) -> str | None:
        """A scripted transport fault for the next request: drop, malformed, truncate or None."""
        with self.lock:
            for name, rate in (("drop", self.drop_rate), ("malformed", self.malformed_rate),
                               ("truncate", self.truncate_rate)):
                if rate and self._fault_rng.random() < rate:
                    self.faults[name] += 1
                    return name
        return None

    def serves(self, name: str) -> bool:
        if self.any_model or name in self.models:
            return True
        return self.ollama_names and f"{name}:latest" in self.models

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        started = time.monotonic()
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            self.requests.append(body)
            fail = self.fail_rate and self._rng.random() < self.fail_rate
            if fail:
                self.failed += 1
        try:
            if fail:
                status = 429 if self.failed % 2 else 500
                return status, {"error": {"message": "scripted failure", "type": "server_error"}}, ({"retry-after": self.retry_after} if self.retry_after is not None else {})
            n = int(body.get("n", 1)) if self.honour_n else 1
            prompt = " ".join(m.get("content", "") for m in body.get("messages", []))
            choices = []
            for i in range(n):
                text = self.responder(body, i)
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"})
            pt = count_tokens(prompt)
            ct = sum(count_tokens(c["message"]["content"]) for c in choices)
            rt = (self.reasoning or 0) * len(choices)
            ct += rt  # reasoning is billed as output
            with self.lock:
                self.answered += 1
                self.prompt_tokens += pt
                self.completion_tokens += ct
                self.reasoning_tokens += rt
            with self.lock:
                self._counter += 1
                index = self._counter
            usage: dict[str, Any] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            if self.reasoning is not None:
                usage["completion_tokens_details"] = {"reasoning_tokens": rt}
            return 200, {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": 0,
                         "model": body.get("model", self.model), "choices": choices,
                         "usage": usage}, {}
        finally:
            with self.lock:
                self.busy_seconds += time.monotonic() - started

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client is gone (a killed run)

            def do_GET(self) -> None:
                with server.lock:
                    server.gets += 1
                if self.path.rstrip("/").endswith("/models"):
                    owner = {"owned_by": "llamacpp"} if server.any_model else {}  # llama.cpp's way
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", **owner}
                                                                for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if server.broken is not None and server.answered >= server.broken_after:
                    with server.lock:
                        server.requests.append(body)
                    self._broken(server.broken)
                    return
                if not server.serves(str(body.get("model"))):
                    with server.lock:
                        server.requests.append(body)
                    self._send(404, {"error": {
                        "message": f"The model `{body.get('model')}` does not exist or you do not "
                                   "have access to it.", "type": "invalid_request_error",
                        "param": None, "code": "model_not_found"}})
                    return
                fault = server._fault()
                if fault == "drop":
                    with server.lock:
                        server.requests.append(body)
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all: a dropped connection
                    return
                if server.reject_max_tokens and "max_tokens" in body:
                    with server.lock:
                        server.requests.append(body)
                    self._send(400, {"error": {
                        "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                   "model. Use 'max_completion_tokens' instead.",
                        "type": "invalid_request_error", "param": "max_tokens"}})
                    return
                if server.reasoning is not None and body.get("temperature", 1) != 1:
                    with server.lock:
                        server.requests.append(body)
                    self._send(400, {"error": {
                        "message": f"Unsupported value: 'temperature' does not support "
                                   f"{body['temperature']} with this model. Only the default (1) "
                                   "value is supported.", "type": "invalid_request_error",
                        "param": "temperature", "code": "unsupported_value"}})
                    return
                server._enter()
                try:
                    status, payload, headers = server._answer(body)
                finally:
                    server._leave()
                if status == 200 and fault is not None:
                    # Answered (and billed), but the body cannot be read.
                    data = json.dumps(payload).encode()
                    data = b"<html>upstream error</html>" if fault == "malformed" else data[: len(data) // 2]
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.close_connection = True
                    return
                self._send(status, payload, headers)

            def _broken(self, how: str) -> None:
                if how == "hang":
                    server.closing.wait()  # accepted, never answered
                    self.close_connection = True
                    return
                if how == "500":
                    self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
                    return
                data, kind = {
                    "html": (b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>",
                             "text/html"),
                    "garbage": (b'{"id": "chatcmpl-1", "choices": [{"message": {"cont', "application/json"),
                    "shape": (b'{"hello": "world"}', "application/json"),
                    "list": (b"[1,2,3]", "application/json"),
                }[how]
                try:
                    self.send_response(200)
                    self.send_header("content-type", kind)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler

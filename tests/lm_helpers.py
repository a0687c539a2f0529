"""Shared by the LM tests (resume, replay, faults, caps, parallel, safety): a deterministic
scripted responder, an in-process backend of canned answers, a sandboxed improver run on a
scripted server, the `stop-tui` CLI as a subprocess, and reading a session's events back."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.improver import Utility, run_improver
from stop_tui.engine.lm.base import Completions
from stop_tui.engine.lm.openai_backend import OpenAIBackend
from stop_tui.engine.lm.service import LanguageModel, Usage
from stop_tui.engine.resume import comparable
from stop_tui.engine.sandbox.process import Limits, Outcome
from stop_tui.engine.session import Session, new_session, session_settings
from stop_tui.engine.store import SessionStore

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
IMPROVER = (ROOT / "tasks" / "meta" / "seed.py").read_text()
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()


def fenced(code: str) -> str:
    return f"Here is an idea, then the code.\n```python\n{code}```\n"


def responder(body: dict, i: int) -> str:
    """Replies depend only on the request (its seed and the choice index): improvers for the
    meta level, LPN solutions (constant predictions, 0 or 1) downstream."""
    user = body["messages"][-1]["content"]
    seed = int(body.get("seed", 0)) + i
    if "def improve_algorithm" in user:
        return fenced(f"{IMPROVER}\n# variant {seed % 3}\n")
    return fenced("import numpy as np\n\n\ndef algorithm(train_samples, train_parity, test_samples):\n"
                  f"    return np.zeros(len(test_samples), dtype=int) + {seed % 2}\n")


class GatedResponder:
    """A scripted server's responder that answers one request per `release()`: the test decides
    when the other process makes progress (`waiting` is set while a request waits)."""

    def __init__(self, respond=None) -> None:
        self.respond = respond or responder  # what a released request is answered with
        self.allowed = threading.Semaphore(0)
        self.waiting = threading.Event()

    def __call__(self, body: dict, i: int) -> str:
        if i == 0:
            self.waiting.set()
            if not self.allowed.acquire(timeout=120):
                raise RuntimeError("never released")
            self.waiting.clear()
        return self.respond(body, i)

    def release(self) -> None:
        self.allowed.release()


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(extra or {})
    return env


def run_args(server, sessions_dir: Path, *extra: str) -> list[str]:
    return ["run", "--task", "lpn", "--model", "scripted", "--base-url", server.base_url,
            "--preset", "quick", "--iterations", "1", "--sessions-dir", str(sessions_dir), *extra]


def stop_tui(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stop_tui", *args], capture_output=True, text=True,
                          env=cli_env(env), timeout=timeout, cwd=ROOT)


def start(*args: str) -> subprocess.Popen:
    """`stop-tui ARGS` in its own process group (so that kill -9 takes the sandboxes too)."""
    return subprocess.Popen([sys.executable, "-m", "stop_tui", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT,
                            start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def only_session(sessions_dir: Path) -> str:
    found = [p.name for p in sessions_dir.iterdir() if (p / "session.db").exists()]
    assert len(found) == 1, found
    return found[0]


def wait_for(predicate, timeout: float = 60.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def kinds_in_log(sessions_dir: Path, under: str = "") -> Counter:
    """Event kinds committed so far by a running session (read-only, WAL-safe); `under`: only
    events whose path starts with it."""
    found = [p for p in sessions_dir.iterdir() if (p / "session.db").exists()]
    if not found:
        return Counter()
    try:
        con = sqlite3.connect(f"file:{found[0] / 'session.db'}?mode=ro", uri=True, timeout=1)
        rows = con.execute("SELECT kind, COUNT(*) FROM events WHERE substr(path, 1, ?) = ? GROUP BY kind",
                           (len(under), under)).fetchall()
        con.close()
    except sqlite3.Error:
        return Counter()
    return Counter(dict(rows))


def session_files(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and time of each file of a session folder: what a writer would change (not -shm, a
    reader's shared-memory index of the WAL)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir()
            if not p.name.endswith("-shm")}


def events_of(sessions_dir: Path, session: str):
    store = SessionStore.open(sessions_dir, session)
    events = list(store.events())
    store.close()
    return events


def same_events(a_dir: Path, a: str, b_dir: Path, b: str, *, budgets: str = "all") -> tuple[list, list]:
    """(only in a, only in b) over comparable effective events (`budgets="final"` when calls
    run concurrently: running totals then depend on which call finished first)."""
    ea = comparable(events_of(a_dir, a), budgets=budgets)
    eb = comparable(events_of(b_dir, b), budgets=budgets)
    ca, cb = Counter(ea), Counter(eb)
    return sorted((ca - cb).elements()), sorted((cb - ca).elements())


def recorded_seeds(events) -> set[int]:
    """Seeds of the requests whose answers are in the log."""
    return {e.data["seed"] for e in events if e.kind == ev.LM_PART and e.data.get("replies")
            and any(r is not None for r in e.data["replies"])}


def request_fingerprint(body: dict) -> str:
    """A server-side request without `n` (a resumed run may ask n=2 where the first run had
    learned to send singles; same seed, same answer)."""
    return json.dumps({k: v for k, v in body.items() if k != "n"}, sort_keys=True)


class CannedBackend:
    """An in-process LM backend of canned answers: choice k of a request for an improver (its
    prompt holds `def improve_algorithm`) is improvers[k % len(improvers)], of any other request
    solutions[k % len(solutions)], each in a python fence after a line of prose."""

    model = "scripted"
    price_key = "local"
    honours_n = True

    def __init__(self, improvers: Sequence[str], solutions: Sequence[str]) -> None:
        self.improvers, self.solutions = list(improvers), list(solutions)

    def request(self, system, user, *, n, temperature, max_tokens, seed=None) -> Completions:
        pool = self.improvers if "def improve_algorithm" in user else self.solutions
        return Completions(texts=[f"Idea.\n```python\n{pool[k % len(pool)]}```\n" for k in range(n)],
                           prompt_tokens=10 * n, completion_tokens=5 * n)

    complete = request

    def close(self) -> None:
        pass


@contextmanager
def finished_session(sessions_dir: Path, settings, backend) -> Iterator[Session]:
    """A new lpn session on `backend`, run to its end; closed on leaving."""
    session = new_session(sessions_dir, "lpn", settings, backend)
    try:
        assert session.engine.run() == "finished"
        yield session
    finally:
        session.close()


@dataclass
class ImproverRun:
    out: Outcome  # what run_improver returned
    lm: LanguageModel  # the improver's LM handle
    usage: Usage  # the session's LM totals when the run ended
    requests: list[dict]  # the request bodies the server received
    session: str  # the session's id (its events: events_of)


def run_improver_on_scripted_lm(sessions_dir: Path, improver: str, *, budget: int,
                                max_responses_per_call: int = 2) -> ImproverRun:
    """`improver` run for real (sandboxed) on lpn's all-zeros solution, a utility that scores 0
    once, and an LM handle (`budget` calls) of a new quick session on a scripted server."""
    with ScriptedLMServer(responder) as server:
        session = new_session(sessions_dir, "lpn", session_settings("quick"),
                              OpenAIBackend("scripted", server.base_url))
        try:
            lm = session.engine.lm.handle("it1/c1/r1", budget, max_responses_per_call)
            utility = Utility("def utility(s): ...", 1, lambda src, k: 0.0)
            out = run_improver(improver, ZEROS, utility, lm, limits=Limits(), time_limit=60, seed=1)
            usage = session.engine.lm.usage
        finally:
            session.close()
        return ImproverRun(out, lm, usage, list(server.requests), session.id)

"""Hostile text from candidates (issue 14, items 5-7): lone surrogates and terminal escapes in
programs, their errors and LM replies. Every one must be stored exactly, and shown on every
output path (score, run and transfer progress on a pipe and on a terminal, show, audit, the TUI)
with its control characters made visible: no ESC, C1, bidi override or lone surrogate reaches
a terminal, and no command dies of UnicodeEncodeError.

The LM is the scripted OpenAI-compatible server (tests/scripted_server.py) behind the real
backend; every program runs in the real sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from lm_helpers import ROOT, cli_env, only_session
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.extract import extract_code
from stop_tui.engine.store import SessionStore
from stop_tui.engine.untrusted import printable

# What a hostile program prints in its error: set the terminal title (OSC 0), clear the screen,
# home the cursor and paint a fake perfect score; a C1 CSI, a bidi override, a Rich markup tag.
FAKE = "\x1b]0;pwned\x07\x1b[2J\x1b[H1.000000 (all tests passed) \x9b31m\u202eevil[/]"
FAKE_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H1.000000 (all tests passed) \\x9b31m\\u202eevil[/]"
RAW = "\x1b[2J\x1b[H\x1b]0;pwned\x07 1.000000 (all tests passed) \u202e"  # raw, in comments
FORBIDDEN = ("\x1b", "\x9b", "\x07", "\u202e", "\ud800")

# Proposed at the meta level (choice 0): fine on a solution, fails with FAKE on an improver,
# so it is accepted at T=1 and makes T=2 fail. Its source holds raw escapes too.
HOSTILE_IMPROVER = f'''# {RAW}
def improve_algorithm(initial_solution, utility, language_model):
    if "def improve_algorithm" in initial_solution:
        raise Exception({FAKE!r})
    return initial_solution
'''
SURROGATE_IMPROVER = HOSTILE_IMPROVER.replace("# ", "# \ud800 ", 1)  # choice 1: holds a lone surrogate
ZEROS = ("import numpy as np\n\n\ndef algorithm(train_samples, train_parity, test_samples):\n"
         "    return np.zeros(len(test_samples), dtype=int)\n")
SOLUTIONS = [f"# \ud800 {RAW}\n{ZEROS}", f"# {RAW}\n{ZEROS}"]  # choice 0 holds a lone surrogate


def reply(code: str) -> str:
    return f"An idea {RAW}, then the code.\n```python\n{code}```\n"


def returned(code: str) -> str:
    """`code` as the improver that asked gets it back (the helper improvers use)."""
    return extract_code(reply(code))


def responder(body: dict, i: int) -> str:
    if "def improve_algorithm" in body["messages"][-1]["content"]:
        return reply([HOSTILE_IMPROVER, SURROGATE_IMPROVER][i % 2])
    return reply(SOLUTIONS[i % 2])


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI; stdout and stderr as bytes (exactly what would reach a terminal)."""
    return subprocess.run([sys.executable, "-m", "stop_tui", *args], capture_output=True,
                          env=cli_env(), timeout=timeout, cwd=ROOT)


def cli_on_terminal(*args: str, timeout: float = 600) -> tuple[int, bytes, bytes]:
    """The CLI with its stderr on a pseudo-terminal (the rich live progress printer)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "stop_tui", *args], stdout=subprocess.PIPE,
                            stderr=slave, env=cli_env({"COLUMNS": "300"}), cwd=ROOT)
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    exited = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5 if exited else 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        elif exited:
            break  # it exited and nothing more came: all it wrote is read
        else:
            exited = proc.poll() is not None
    out = proc.stdout.read()
    code = proc.wait(timeout=60)
    os.close(master)
    return code, out, bytes(seen)


def assert_clean(data: bytes) -> None:
    """Output that reaches a terminal: valid UTF-8 and none of the hostile characters."""
    text = data.decode("utf-8")  # a lone surrogate cannot even be encoded
    for ch in FORBIDDEN:
        assert ch not in text, (repr(ch), text[-2000:])


# -- the neutraliser -------------------------------------------------------------------------

def test_printable_makes_every_control_character_visible():
    assert printable(FAKE) == FAKE_SHOWN
    assert printable("lone \ud800 and \udfff") == "lone \\ud800 and \\udfff"
    assert printable("del \x7f, nul \x00, bs \x08, cr \r, lf \n, tab \t") == \
        "del \\x7f, nul \\x00, bs \\x08, cr \\r, lf \\n, tab \\t"
    assert printable("\u2066isolate\u2069 \u202aembed\u202c \u200f") == \
        "\\u2066isolate\\u2069 \\u202aembed\\u202c \\u200f"
    # a multi-line view keeps its lines and tabs (CRLF is one line ending), nothing else
    assert printable("a\r\n\tb\rc\x1b", multiline=True) == "a\n\tb\\rc\\x1b"
    plain = "déjà vu: 中文, ✓, ⚑, … and \\x1b as text"
    assert printable(plain) is plain and printable(plain, multiline=True) is plain
    assert printable(None) == "None" and printable(3.5) == "3.5"


def test_store_keeps_a_lone_surrogate_exactly(tmp_path):
    store = SessionStore.create(tmp_path, {"task": "lpn"})
    text = SURROGATE_IMPROVER
    digest = store.put_text(text)
    assert store.put_text(text) == digest  # content-addressed, stored once
    assert store.text(digest) == text
    store.close()
    again = SessionStore(store.folder)
    assert again.text(digest) == text and again.text(again.put_text("plain")) == "plain"
    again.close()


# -- score: a solution's error (items 6, 7) --------------------------------------------------

@pytest.mark.parametrize("message, shown", [
    (FAKE, FAKE_SHOWN),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
])
def test_score_shows_a_hostile_error_escaped(tmp_path, message, shown):
    solution = tmp_path / "hostile.py"
    solution.write_text("def algorithm(train_samples, train_parity, test_samples):\n"
                        f"    raise ValueError({message!r})\n")
    proc = cli("score", "--task", "lpn", "--split", "val", str(solution))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_clean(proc.stdout + proc.stderr)
    line = proc.stdout.decode().strip()
    assert line.startswith("lpn val: 0.0000") and f"  (instance 0: ValueError: {shown} (line 2))" in line, line
    proc = cli("score", "--task", "lpn", str(solution), "--json")  # JSON escapes it all itself
    assert proc.returncode == 0 and f"ValueError: {message}" in json.loads(proc.stdout)["error"]


def test_score_shows_a_dying_solutions_output_escaped(tmp_path):
    """The last line a solution printed before it died is part of the error."""
    solution = tmp_path / "dies.py"
    solution.write_text("import os\n\n\ndef algorithm(train_samples, train_parity, test_samples):\n"
                        f"    os.write(1, {FAKE!r}.encode())\n    os._exit(3)\n")
    proc = cli("score", "--task", "lpn", str(solution))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_clean(proc.stdout + proc.stderr)
    assert f"sandbox process exited (code 3): {FAKE_SHOWN}" in proc.stdout.decode()


# -- a whole session: run, resume, show, audit, the TUI (items 5, 7) -------------------------

@pytest.fixture(scope="module")
def server():
    with ScriptedLMServer(responder) as s:
        yield s


@pytest.fixture(scope="module")
def hostile_session(server, tmp_path_factory):
    """`run` for two iterations (progress on a pipe), then `run --resume` for a third (progress
    on a terminal). T=0 scores LM-written solutions, one holding a lone surrogate; T=1 proposes
    the hostile improver (accepted) and one holding a lone surrogate; T=2 and T=3 run the
    hostile improver, which fails with FAKE."""
    sessions = tmp_path_factory.mktemp("sessions")
    base = ["--model", "scripted", "--base-url", server.base_url, "--sessions-dir", str(sessions)]
    first = cli("run", "--task", "lpn", "--preset", "quick", "--iterations", "2", *base)
    session = only_session(sessions) if first.returncode == 0 else None
    resumed = cli_on_terminal("run", "--resume", session, "--iterations", "3", *base) if session else None
    return sessions, session, first, resumed


def test_run_with_lone_surrogates_finishes_and_stores_them_exactly(hostile_session):
    sessions, session, first, _ = hostile_session
    assert first.returncode == 0, first.stderr.decode(errors="replace")[-3000:]
    store = SessionStore.open(sessions, session)
    events = list(store.events())
    proposed = {e.path: store.text(e.data["source"]) for e in events
                if e.kind == ev.CANDIDATE_PROPOSED and e.data.get("source")}
    assert returned(SURROGATE_IMPROVER) in proposed.values() and returned(HOSTILE_IMPROVER) in proposed.values()
    solutions = {store.text(e.data["source"]) for e in events
                 if e.kind == ev.SOLUTION_SCORED and e.data.get("source")}
    assert returned(SOLUTIONS[0]) in solutions and returned(SOLUTIONS[1]) in solutions
    replies = {store.text(h) for e in events if e.kind == ev.LM_REPLY for h in e.data["replies"]}
    assert reply(SURROGATE_IMPROVER) in replies and reply(SOLUTIONS[0]) in replies
    # a program holding a lone surrogate cannot compile: a failed candidate, with a reason
    failed = [e for e in events if e.kind == ev.CANDIDATE_SCORED and
              proposed.get(e.path) == returned(SURROGATE_IMPROVER)]
    assert failed and all(e.data["score"] == 0 and "surrogates not allowed" in e.data["error"]
                          for e in failed)
    verdicts = {e.data["iteration"]: e.kind for e in events
                if e.kind in (ev.ITERATION_ACCEPTED, ev.ITERATION_REJECTED)}
    assert verdicts[1] == ev.ITERATION_ACCEPTED and verdicts[2] == ev.ITERATION_REJECTED
    store.close()


def test_run_progress_shows_hostile_errors_escaped(hostile_session):
    _, _, first, _ = hostile_session
    assert first.returncode == 0
    assert_clean(first.stdout + first.stderr)
    progress = first.stderr.decode()
    assert (f"iteration 2: kept the previous improver (the improver failed: Exception: {FAKE_SHOWN} "
            "(line 4))") in progress, progress[-3000:]


def test_resume_on_a_terminal_continues_and_escapes(hostile_session):
    sessions, session, _, resumed = hostile_session
    assert resumed is not None
    code, out, terminal = resumed
    assert code == 0, terminal.decode(errors="replace")[-3000:]
    assert b"3 iteration(s)" in out
    shown = terminal.decode("utf-8")
    # the live printer draws with escapes of its own; none of the candidate's get through
    for seq in ("\x1b]0;pwned", "\x1b[2J", "\x1b[H1.0", "\x9b", "\u202e", "\x07"):
        assert seq not in shown, repr(seq)
    assert "iteration 3: kept the previous improver (the improver failed: Exception: \\x1b]0;pwned\\x07" in shown
    store = SessionStore.open(sessions, session)
    kinds = [e.kind for e in store.events()]
    store.close()
    assert kinds.count(ev.RESUMED) == 1 and kinds.count(ev.ITERATION_REJECTED) == 2


def test_show_and_audit_print_hostile_texts_escaped(hostile_session):
    sessions, session, _, _ = hostile_session
    proc = cli("show", session, "--sessions-dir", str(sessions))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_clean(proc.stdout + proc.stderr)
    assert f"rejected (the improver failed: Exception: {FAKE_SHOWN} (line 4))" in proc.stdout.decode()
    proc = cli("show", session, "--sessions-dir", str(sessions), "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)["iterations"]
    assert rows[2]["reason"] == f"the improver failed: Exception: {FAKE} (line 4)"
    proc = cli("audit", session, "--sessions-dir", str(sessions))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_clean(proc.stdout + proc.stderr)


@pytest.mark.slow
def test_tui_shows_hostile_texts_escaped(hostile_session):
    from stop_tui.tui.app import StopApp
    from stop_tui.tui.widgets.lineage import LineagePane
    from stop_tui.tui.widgets.source import SourcePane

    sessions, session, _, _ = hostile_session
    store = SessionStore.open(sessions, session)
    seen: list[str] = []

    def screen_text(app) -> str:
        text = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
        seen.append(text)
        return text

    async def go():
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=(220, 60)) as pilot:
            await pilot.pause()
            model = app.view.model
            hostile = next(p for p, n in model.nodes.items() if n.kind == "candidate"
                           and store.text(n.source) == returned(HOSTILE_IMPROVER) and p.startswith("it1/c"))
            surrogate = next(p for p, n in model.nodes.items() if n.kind == "candidate"
                             and store.text(n.source) == returned(SURROGATE_IMPROVER))
            lineage, source = app.screen.query_one(LineagePane), app.screen.query_one(SourcePane)
            for path in (hostile, surrogate, f"{surrogate}/r1", "it2", "it0/check/r1/s1", "it0/check/r1/s2"):
                lineage.select_path(path)
                await pilot.pause()
                assert source.path == path
                for key in ("", "d", "d", "e"):  # the program, its diff, back, the LM exchange
                    if key:
                        await pilot.press(key)
                        await pilot.pause()
                    screen_text(app)
                    source.scroll_end(animate=False)
                    await pilot.pause()
                    screen_text(app)
                    source.scroll_home(animate=False)
                if source.mode != "source":
                    await pilot.press("e")
                    await pilot.pause()
            lineage.select_path(hostile)
            await pilot.pause()
            assert "# \\x1b[2J\\x1b[H\\x1b]0;pwned\\x07 1.000000 (all tests passed) \\u202e" in screen_text(app)
            lineage.select_path(surrogate)
            await pilot.press("e")
            await pilot.pause()
            source.scroll_end(animate=False)  # the reply comes after the system message and prompt
            await pilot.pause()
            assert "# \\ud800 \\x1b[2J" in screen_text(app)  # the LM reply, in the exchange view
            await pilot.press("e")
            lineage.select_path("it2")
            await pilot.pause()
            assert "Exception: \\x1b]0;pwned\\x07\\x1b[2J" in screen_text(app)
            await pilot.press("ctrl+q")

    asyncio.run(go())
    store.close()
    assert len(seen) > 20
    for text in seen:
        for ch in FORBIDDEN:
            assert ch not in text, (repr(ch), text)


# -- transfer: a scored candidate with a lone surrogate, an error with escapes (items 5, 7) ---

TRANSFER_IMPROVER = f'''def improve_algorithm(initial_solution, utility, language_model):
    utility(initial_solution + "\\n# \\ud800\\n")  # a candidate holding a lone surrogate
    raise Exception({FAKE!r})
'''


def test_transfer_survives_lone_surrogates_and_escapes_errors(server, tmp_path):
    improver = tmp_path / "hostile_improver.py"
    improver.write_text(TRANSFER_IMPROVER)
    sessions = tmp_path / "sessions"
    proc = cli("transfer", "--improver", str(improver), "--tasks", "lpn", "--runs", "1",
               "--preset", "quick", "--model", "scripted", "--base-url", server.base_url,
               "--sessions-dir", str(sessions))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert_clean(proc.stdout + proc.stderr)
    assert f"improver run failed: Exception: {FAKE_SHOWN}" in proc.stderr.decode()
    session = only_session(sessions)
    store = SessionStore.open(sessions, session)
    scored = [store.text(e.data["source"]) for e in store.events(kinds=(ev.SOLUTION_SCORED,))
              if e.data.get("source")]
    store.close()
    assert any(s is not None and s.endswith("\n# \ud800\n") for s in scored)
    again = cli("transfer", "--resume", session, "--sessions-dir", str(sessions),
                "--base-url", server.base_url)
    assert again.returncode == 0, again.stderr.decode(errors="replace")[-3000:]
    assert_clean(again.stdout + again.stderr)
    assert again.stdout == proc.stdout  # the same table, nothing re-run

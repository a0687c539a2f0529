"""The workbench driven as a user would (Textual Pilot): a real engine with real sandboxes
behind a scripted LM, and sessions rebuilt from their event logs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS
from tui_helpers import header_line, notices, screen_text, settle, wait_until

from stop_tui.engine import events as ev
from stop_tui.engine.gate import Gate
from stop_tui.engine.lm.base import Completions
from stop_tui.engine.session import Session, new_session, open_session, session_settings
from stop_tui.tui.app import StopApp
from stop_tui.tui.messages import EngineEvents
from stop_tui.tui.model import SessionModel
from stop_tui.tui.screens.help import HelpScreen
from stop_tui.tui.synthetic import write_session
from stop_tui.tui.widgets.budget import BudgetPane
from stop_tui.tui.widgets.lineage import LineagePane
from stop_tui.tui.widgets.scores import ScoresPane
from stop_tui.tui.widgets.source import SourcePane

EXACT = (PROGRAMS / "lpn_exact.py").read_text()
ZEROS = (PROGRAMS / "lpn_zeros.py").read_text()
FIRST = (PROGRAMS / "improver_first.py").read_text()
IDENTITY = (PROGRAMS / "improver_identity.py").read_text()
SIZE = (160, 48)


def fenced(code: str) -> str:
    return f"An idea, then the code.\n```python\n{code}```\n"


class ScriptedBackend:
    """Improvers are asked for improvers (FIRST, IDENTITY...), solutions for solutions
    (EXACT, ZEROS...). `hold` makes every call wait until it is set (a call in flight)."""

    model = "scripted"
    price_key = "local"

    def __init__(self, hold: threading.Event | None = None, hold_after: int = 0) -> None:
        self.hold = hold
        self.hold_after = hold_after
        self.calls = 0
        self.held = threading.Event()

    def complete(self, system, user, *, n, temperature, max_tokens, seed=None) -> Completions:
        self.calls += 1
        if self.hold is not None and self.calls > self.hold_after:
            self.held.set()
            self.hold.wait(30)
        pool = [FIRST, IDENTITY] if "def improve_algorithm" in user else [EXACT, ZEROS]
        return Completions(texts=[fenced(pool[k % 2]) for k in range(n)], prompt_tokens=100 * n,
                           completion_tokens=50 * n, requests=1)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


AT_BOUNDARY = "paused  at an iteration boundary"  # the header while the engine waits there
BEFORE_CALL = "paused  before an LM call"


def stepped_session(tmp_path, backend, *, step: bool = True) -> Session:
    """A new one-iteration lpn session on `backend`; with `step` its engine waits at its first
    gate (as `--step` opens it) until the user steps or runs."""
    return new_session(tmp_path, "lpn", session_settings("quick", iterations=1), backend,
                       gate=Gate(running=not step))


def model_view(model: SessionModel) -> dict:
    return {p: (n.status, n.score, n.test, n.source) for p, n in model.nodes.items()}


def test_step_one_call_from_an_iteration_boundary_sends_exactly_one_call(tmp_path):
    """`.` pressed where the engine waits between iterations (right after opening, or after a
    `space`) starts the next iteration and lets one LM call through, then pauses there."""
    backend = ScriptedBackend()
    session = stepped_session(tmp_path, backend)

    async def go():
        app = StopApp(session, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("space")  # iteration 0 (the seed's scoring), then a boundary
            await wait_until(pilot, lambda: "T=0 accepted" in screen_text(app) and AT_BOUNDARY in header_line(app))
            calls = backend.calls
            await pilot.press("full_stop")
            # The header says it from the gate's message, the tree from the feeder's next
            # snapshot (up to its spacing later).
            await wait_until(pilot, lambda: BEFORE_CALL in header_line(app) and "T=1 running" in screen_text(app))
            # the engine waits at the next call's gate: exactly one call went through
            assert backend.calls == calls + 1

    asyncio.run(go())
    session.close()


def test_step_once_grows_the_tree_and_shows_the_score(tmp_path):
    session = stepped_session(tmp_path, ScriptedBackend())

    async def go():
        app = StopApp(session, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert set(app.view.model.nodes) == {"it0", "it1"}  # planned iterations, pending
            # --step: the engine waits at its first gate, nothing spent until the user steps
            await wait_until(pilot, lambda: AT_BOUNDARY in header_line(app))
            assert "calls       0 / " in screen_text(app)
            await pilot.press("space")
            await wait_until(pilot, lambda: "T=0 accepted" in screen_text(app) and AT_BOUNDARY in header_line(app))
            await settle(pilot)
            model = app.view.model
            assert "it0/check/r1" in model.nodes and "it0/check/r1/s1" in model.nodes
            assert 1 not in model.verdicts  # one step = one iteration (the seed's scoring)
            text = screen_text(app)
            assert "T=0 accepted" in text and "1.000" in text  # the exact solver scores 1.0
            assert "paused" in text
            scores = app.screen.query_one(ScoresPane)
            assert "1.0000" in str(scores.render())
            # The seed's check node: its source, then a diff (no parent: says so), the exchange.
            app.screen.query_one(LineagePane).select_path("it0/check/r1/s1")
            await pilot.pause()
            source = app.screen.query_one(SourcePane)
            assert source.path == "it0/check/r1/s1"
            await pilot.press("d")
            await pilot.pause()
            assert source.border_title == "Source · diff"
            assert "--- the task's seed solution" in screen_text(app)
            await pilot.press("e")
            await pilot.pause()
            assert "The reply that produced this program" in screen_text(app)
            # Step the real iteration.
            await pilot.press("space")
            await wait_until(pilot, lambda: " finished " in header_line(app))
            await settle(pilot)
            model = app.view.model
            assert {"it1/c1", "it1/c2", "it1/check"} <= set(model.nodes)
            assert model.verdicts[1][0] is True
            assert "T=1 accepted" in screen_text(app)
            await pilot.press("a")
            await pilot.pause()
            assert source.path == "it1/check"
            assert "it1/check  the improver this iteration returned" in screen_text(app)
            await pilot.press("ctrl+q")

    asyncio.run(go())
    session.close()


def subtree(model: SessionModel, root: str) -> dict:
    return {p: v for p, v in model_view(model).items() if p == root or p.startswith(root + "/")}


def test_quit_mid_call_then_resume_looks_the_same_and_continues(tmp_path):
    hold = threading.Event()
    backend = ScriptedBackend(hold, hold_after=1)  # the seed's call goes through; it1's is held
    session = stepped_session(tmp_path, backend)
    sid = session.id
    seen = {}

    async def first():
        app = StopApp(session, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("r")
            await wait_until(pilot, backend.held.is_set, 60)
            await settle(pilot)
            assert " running " in header_line(app)
            seen["it0"] = subtree(app.view.model, "it0")
            t = time.monotonic()
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: not app.is_running, 10)
            seen["quit"] = time.monotonic() - t
        return app

    app = asyncio.run(first())
    assert seen["quit"] < 6  # the app leaves within a few seconds though the call is held
    assert seen["it0"]["it0"][0] == "accepted"
    hold.set()  # the call in flight returns; the engine stops at its next gate
    assert app.engine_done.wait(30)
    kinds = [e.kind for e in session.store.events()]
    assert ev.PAUSED in kinds and ev.SESSION_FINISHED not in kinds
    session.close()

    # Resume: the completed work looks the same, then the run continues.
    resumed = open_session(tmp_path, sid, backend=ScriptedBackend(), gate=Gate(running=False))

    async def second():
        app = StopApp(resumed, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert subtree(app.view.model, "it0") == seen["it0"]
            await wait_until(pilot, lambda: AT_BOUNDARY in header_line(app))
            text = screen_text(app)
            assert "T=0 accepted" in text and "T=1 accepted" not in text  # iteration 1 is to do
            assert 1 not in app.view.model.verdicts
            await pilot.press("r")
            await wait_until(pilot, lambda: " finished " in header_line(app), 120)
            await settle(pilot)
            model = app.view.model
            assert model.verdicts[1][0] is True
            assert subtree(model, "it0") == seen["it0"]
            await pilot.press("ctrl+q")

    asyncio.run(second())
    resumed.close()


def test_log_replay_equals_live_feed(tmp_path):
    store = write_session(tmp_path, "demo", iterations=2)
    events = list(store.events())
    at_once = SessionModel(store.meta(), store.id)
    at_once.ingest_all(events)
    one_by_one = SessionModel(store.meta(), store.id)
    for e in events:
        one_by_one.ingest(e)
        one_by_one.take_changes()
    assert model_view(at_once) == model_view(one_by_one)
    assert at_once.accepted_path() == "it2/check"
    store.close()


def test_injected_events_update_the_open_app_and_keep_the_selection(tmp_path):
    full = write_session(tmp_path / "a", "demo", iterations=2, planned=2, finished=True)
    events = list(full.events())
    empty = write_session(tmp_path / "b", "demo", iterations=0, planned=2)

    async def go():
        app = StopApp(store=empty, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            tree = app.screen.query_one(LineagePane)
            tree.select_path("it2")
            await pilot.pause()
            assert "T=2 pending" in screen_text(app)
            before = len(app.view.model.nodes)
            node_events = [e for e in events if e.path]  # the other session's work, fed live
            app.post_message(EngineEvents(
                tuple(ev.Event(e.kind, e.path, e.data, e.t, 10_000 + e.seq) for e in node_events)))
            await settle(pilot)
            assert len(app.view.model.nodes) > before
            assert tree.cursor_node is not None and tree.cursor_node.data == "it2"
            text = screen_text(app)
            assert "T=2 accepted" in text and "it2  the improver this iteration runs" in text
            assert " viewing  engine off" in header_line(app)  # its log has no end: not finished
            await pilot.press("space")  # the engine is off: a notice, no crash
            await pilot.pause()
            assert "The engine is off: this view replays the session's log." in notices(app)

    asyncio.run(go())
    full.close()
    empty.close()


def test_flags_sandbox_warning_and_baselines(tmp_path):
    store = write_session(tmp_path, "demo", iterations=1, sandbox_missing=("no_network",))
    (store.folder / "baselines").mkdir()
    (store.folder / "baselines" / "seed-only.json").write_text(json.dumps(
        {"method": "seed-only", "task": "lpn", "scores": [0.2, 0.3], "mean": 0.25, "ci95": [0.2, 0.3]}))

    async def go():
        app = StopApp(store=store, engine=False, theme="light", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            text = screen_text(app)
            assert "sandbox missing: no_network" in text
            assert "⚑1" in text  # it1/c2 carries the flag
            assert any("FLAG subprocess line 3" in line.text for line in app.view.model.log)
            assert "seed-only 0.25" in text and "┄" in text

    asyncio.run(go())
    store.close()


def test_budget_shows_caps_and_tokens_only_for_unknown_prices(tmp_path):
    store = write_session(tmp_path, "demo", iterations=1, model="some-unpriced-model", priced=False,
                          settings_overrides={"cap_calls": 40, "cap_tokens": 100_000})

    async def go():
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            budget = str(app.screen.query_one(BudgetPane).render())
            assert "(cap)" in budget and "/ 40" in budget and "/ 100.0k" in budget
            assert "unknown price (tokens only)" in budget
            assert "$" not in budget

    asyncio.run(go())
    store.close()


def test_theme_key_palette_help_and_remembered_theme(tmp_path):
    store = write_session(tmp_path, "demo", iterations=1)

    async def go(theme=None):
        app = StopApp(store=store, engine=False, theme=theme)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            first = app.theme
            await pilot.press("t")
            await pilot.pause()
            assert app.theme != first
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"theme: paper")
            # the typed text, and the command it found
            await wait_until(pilot, lambda: screen_text(app).count("theme: paper") >= 2, 10)
            await pilot.press("enter")
            await pilot.pause()
            assert app.theme == "paper"
            await pilot.press("f1")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            assert "Lineage" in screen_text(app)  # help for the focused pane
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)
        return app

    asyncio.run(go())
    saved = json.loads((tmp_path / "config" / "stop-tui" / "config.json").read_text())
    assert saved["theme"] == "paper"
    app = StopApp(store=store, engine=False)
    assert app.theme == "paper"  # remembered for this user
    store.close()


def test_keys_can_be_remapped_by_binding_id(tmp_path):
    store = write_session(tmp_path, "demo", iterations=1)
    config = tmp_path / "config" / "stop-tui"
    config.mkdir(parents=True)
    (config / "config.json").write_text(json.dumps({"keymap": {"view.diff": "x"}}))

    async def go():
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("down", "x")
            await pilot.pause()
            assert app.screen.query_one(SourcePane).border_title == "Source · diff"

    asyncio.run(go())
    store.close()


def test_resume_picker_opens_the_chosen_session(tmp_path):
    sessions = tmp_path / "sessions"
    write_session(sessions, "20260101-090000-lpn", iterations=1, finished=True).close()
    write_session(sessions, "20260102-090000-lpn", iterations=1, planned=2).close()
    opened = []

    def open_fn(folder: str):
        opened.append(Path(folder).name)
        return open_session(sessions, folder, backend=ScriptedBackend(), gate=Gate(running=False))

    async def go():
        app = StopApp(sessions_dir=sessions, open_session_fn=open_fn, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            text = screen_text(app)
            assert "20260101-090000-lpn" in text and "20260102-090000-lpn" in text
            await pilot.press("enter")  # the newest is first
            await wait_until(pilot, lambda: "T=1 accepted" in screen_text(app), 10)
            await settle(pilot)
            assert opened == [] and app.session is None  # viewed: no engine, no backend yet
            assert "r runs, space steps" in header_line(app)
            await pilot.press("space")  # stepping takes it over: now it is opened with an engine
            await wait_until(pilot, lambda: " finished " in header_line(app), 120)  # T=2 was run here
            assert opened == ["20260102-090000-lpn"] and app.session is not None
            assert 2 in app.view.model.verdicts and "T=2 pending" not in screen_text(app)
            await pilot.press("ctrl+q")
        return app

    app = asyncio.run(go())
    app.session.close()


def test_resume_without_id_and_without_a_terminal_is_a_user_error(tmp_path, monkeypatch, capsys):
    from stop_tui import cli

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["resume", "--sessions-dir", str(tmp_path)]) == 2
    assert "give a session id" in capsys.readouterr().err


def test_cli_new_and_resume_reach_launch(tmp_path, monkeypatch):
    """`stop-tui new` builds the session (paused with --step) and hands it to the app."""
    from stop_tui import cli
    from stop_tui.tui import launch as launch_mod

    seen = {}

    def fake_run(app):
        if app.session is not None:
            seen["gate_mode"] = app.session.gate.mode
            seen["id"] = app.session.id
            app.session.close()
        else:  # resume: viewed read-only; the engine comes when the user runs or steps
            seen["viewed"] = (app.store.id, app.store.readonly, app.open_session_fn is not None)
            app.store.close()
        return 0

    made = []
    monkeypatch.setattr(launch_mod, "run_app", fake_run)
    monkeypatch.setattr("stop_tui.engine.session.make_backend", lambda *a, **k: made.append(a) or ScriptedBackend())
    rc = cli.main(["new", "--task", "lpn", "--preset", "quick", "--step", "--sessions-dir", str(tmp_path)])
    assert rc == 0 and seen["gate_mode"] == "pause" and len(made) == 1
    rc = cli.main(["resume", seen["id"], "--sessions-dir", str(tmp_path)])
    assert rc == 0 and seen["viewed"] == (seen["id"], True, True)
    assert len(made) == 1  # reopening made no backend
    assert Path(tmp_path, seen["id"], "session.db").exists()


SEED_IMPROVER = (Path(__file__).resolve().parent.parent / "tasks" / "meta" / "seed.py").read_text()


@pytest.mark.parametrize("step", [True, False])
def test_a_new_session_shows_the_seed_improver_from_the_first_frame(tmp_path, step):
    session = stepped_session(tmp_path, ScriptedBackend(), step=step)
    frames = []

    class FirstFrame(StopApp):
        def _open_store(self) -> None:
            super()._open_store()
            self.call_after_refresh(lambda: frames.append(screen_text(self)))

    async def go():
        app = FirstFrame(session, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: frames, 10)
            source = app.screen.query_one(SourcePane)
            assert source.path == "it0"
            first_line = SEED_IMPROVER.strip().splitlines()[0]
            assert first_line in frames[0] and "def improve_algorithm" in frames[0]
            assert "pending: nothing has run here yet" not in frames[0]
            # the first frame is drawn from the session's meta, before any event is folded in
            assert "it0  the seed improver: T=0 scores it" in frames[0]
            await pilot.press("ctrl+q")

    asyncio.run(go())
    session.close()


def test_a_pending_iteration_shows_the_improver_accepted_so_far_and_scores_end_at_one(tmp_path):
    """A pending iteration shows what it will run; once it is accepted with a perfect score the
    Scores axis of scores in [0, 1] still ends at 1."""
    store = write_session(tmp_path, "demo", iterations=1, planned=2)

    async def go():
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.screen.query_one(LineagePane).select_path("it2")
            await pilot.pause()
            text = screen_text(app)
            assert "pending: it will run the improver accepted by then (now: T=1's)" in text
            improver = store.text(app.view.model.accepted[1][2])
            marker = next(line for line in improver.splitlines() if "# variant" in line).strip()
            assert marker in text  # T=1's improver, not the seed
            app.post_message(EngineEvents((ev.Event(ev.ITERATION_STARTED, "it2", {"iteration": 2}, seq=90_001),
                                           ev.Event(ev.ITERATION_ACCEPTED, "it2", {
                                               "iteration": 2, "val": 1.0, "test": 1.0}, seq=90_002))))
            await settle(pilot)
            assert "T=2 accepted  val 1.000" in screen_text(app)
            chart = str(app.screen.query_one(ScoresPane).render())
            ticks = [line.split("┤")[0].strip() for line in chart.splitlines() if "┤" in line]
            assert ticks[0] == "1.00" and ticks[-1] == "0.00", ticks
            assert "2.00" not in chart

    asyncio.run(go())
    store.close()


def test_the_header_says_when_the_model_fixes_the_temperature(tmp_path):
    """The LM layer records `lm_fixed_temperature` in the session's meta when the model
    refuses custom temperatures; the header says so once a reply arrives."""
    from stop_tui.tui.widgets.header import FIXED_TEMPERATURE, SessionHeader

    class FixedTemperature(ScriptedBackend):
        def complete(self, *args, **kwargs):
            session.store.set_meta({"lm_fixed_temperature": True})
            return super().complete(*args, **kwargs)

    session = stepped_session(tmp_path, FixedTemperature())

    async def go():
        app = StopApp(session, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            header = app.screen.query_one(SessionHeader)
            assert FIXED_TEMPERATURE not in str(header.render())
            await pilot.press("space")  # T=0: the seed's run makes one LM call
            await wait_until(pilot, lambda: "temperature fixed by the model" in str(header.render()), 60)
            # all of it when it fits, else on hover (the state and its detail keep their room)
            assert FIXED_TEMPERATURE in str(header.render()) or FIXED_TEMPERATURE in header.tooltip
            await pilot.press("ctrl+q")

    asyncio.run(go())
    session.close()


def test_a_finished_session_in_a_small_terminal(tmp_path):
    """80x24: lineage scores are whole, the holder of a watched session stays in the header,
    help fits, and the LM exchange wraps instead of running off the pane."""
    from stop_tui.tui.follow import Holder
    from stop_tui.tui.messages import FollowState

    store = write_session(tmp_path, "20260102-090000-lpn", iterations=2, planned=2, finished=True)

    async def go():
        app = StopApp(store=store, engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            model = app.view.model
            text = screen_text(app)
            for t in (1, 2):  # each iteration's score is shown whole, not cut at the pane's edge
                assert f"T={t}  val {model.nodes[f'it{t}'].score:.3f}" in text
            assert "1.00 ┤" in text and "0.50 ┤" in text  # a [0, 1] axis with its middle
            app.post_message(FollowState(Holder(4242, "somehost", "2026-01-02 09:00:00 UTC"), store.meta()))
            await settle(pilot)
            header = header_line(app)
            assert "watching" in header and "read-only: run by pid 4242 on somehost" in header
            await pilot.press("space")
            await pilot.pause()
            assert "read-only: session is run by pid 4242 on somehost" in notices(app)
            await pilot.press("e")  # T=0: the seed improver's (prose) note wraps inside the pane
            await pilot.pause()
            assert "LM exchange produced it." in screen_text(app)
            await pilot.press("f1")
            await pilot.pause()
            assert "esc to close" in screen_text(app)

    asyncio.run(go())
    store.close()

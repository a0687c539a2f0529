"""Comparing sessions (issue 12): the reader that follows many session folders
(engine/report/live.py), and the TUI's compare screen reached from a sweep's table, from the
palette ("sessions: compare") and from a session's view: the runs' curves overlaid with each
group's interval band, a table of the runs, enter opening one, live while a run goes on.

Real parts: sessions run by the real CLI on the scripted LM server (two models, two seeds),
placed in a sweep's layout; one of them is resumed by a real `stop-tui run --resume`
subprocess, gated request by request, while the screen follows it. The snapshot is drawn
from synthetic logs (fixed times) with one session growing under a held lock."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
from lm_helpers import GatedResponder, fenced, kill9, responder, start, stop_tui
from scripted_server import ScriptedLMServer
from sweep_helpers import new_sweep, place
from textual.command import CommandPalette
from textual.widgets import DataTable, Markdown
from tui_helpers import header_line, notices, screen_text, settle, wait_until

from stop_tui.engine import events as ev
from stop_tui.engine.lock import acquire
from stop_tui.engine.report.collect import run_row
from stop_tui.engine.report.live import LiveRuns, groups, sessions_in
from stop_tui.engine.store import SessionStore
from stop_tui.engine.sweep import status
from stop_tui.tui.app import StopApp
from stop_tui.tui.screens.compare import (
    ComparePickScreen,
    CompareRunScreen,
    CompareScreen,
    CompareTable,
    note,
    state_of,
)
from stop_tui.tui.screens.help import HelpScreen
from stop_tui.tui.screens.main import MainScreen
from stop_tui.tui.screens.picker import PickerScreen
from stop_tui.tui.screens.sweep import SweepScreen
from stop_tui.tui.synthetic import write_session
from stop_tui.tui.widgets.compare_chart import CompareChart

SIZE = (160, 40)
MODELS = ["scripted", "other"]  # the scripted server serves both names
RUNS = (("scripted", 0), ("other", 0), ("scripted", 1), ("other", 1))  # the sweep's order: seed-major
T975 = {2: 12.706, 3: 4.303}  # Student's t, 97.5 % quantile, by n (n - 1 degrees of freedom)


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def scored(body: dict, i: int) -> str:
    """lpn solutions of chosen quality: a brute force over the secrets that use only the first
    k of the 10 bits, k from the request's seed and model (k = 10 solves the instances up to
    the noise, k = 0 guesses), so runs of different seeds and models score differently;
    improvers as `responder`."""
    if "def improve_algorithm" in body["messages"][-1]["content"]:
        return responder(body, i)
    k = (int(body.get("seed", 0)) + i + (3 if body.get("model") == "other" else 0)) % 11
    return fenced(f"""import itertools

import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    train, labels, test = np.asarray(train_samples), np.asarray(train_parity), np.asarray(test_samples)
    best, best_hits = np.zeros(10, dtype=int), -1
    for bits in itertools.product((0, 1), repeat={k}):
        secret = np.array(list(bits) + [0] * {10 - k}, dtype=int)
        hits = int(np.sum((train @ secret) % 2 == labels))
        if hits > best_hits:
            best, best_hits = secret, hits
    return ((test @ best) % 2).tolist()
""")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(model, seed) -> (session folder, its `run --json` summary): one quick iteration each,
    the last paused by --max-calls 1 after the seed improver scored (resumed live below)."""
    root = tmp_path_factory.mktemp("compare-sources")
    out = {}
    with ScriptedLMServer(scored, models=MODELS) as server:
        for k, (model, seed) in enumerate(RUNS):
            extra = ("--max-calls", "1") if k == len(RUNS) - 1 else ()
            done = stop_tui("run", "--task", "lpn", "--model", model, "--base-url", server.base_url,
                            "--preset", "quick", "--iterations", "1", "--seed", str(seed),
                            "--sessions-dir", str(root / f"{model}-{seed}"), "--json", *extra)
            assert done.returncode == (3 if extra else 0), done.stderr
            summary = json.loads(done.stdout)
            out[(model, seed)] = (summary["session_dir"], summary)
    return out


def curve_of(summary: dict) -> list[float]:
    """The held improver's val meta-utility after t = 0..N, from `run --json`."""
    return [summary["seed_meta_utility"], *summary["meta_utility"]]


def ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval clipped to [0, 1], by hand."""
    n = len(values)
    m = sum(values) / n
    if n == 1:
        return m, m, m
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = T975[n] * sd / math.sqrt(n)
    return m, max(0.0, m - half), min(1.0, m + half)


def side_line(t: int, values: list[float]) -> str:
    """The chart's side line for one t of a group, as a user reads it."""
    m, lo, hi = ci(values)
    return f"T{t:<2} {m:.4f} {f'[{lo:.3f}, {hi:.3f}]':<14} n={len(values)}"


def make_sweep(sources, tmp_path):
    sweep = new_sweep(tmp_path / "sessions", seeds=(0, 1))  # models scripted, other; lpn, quick
    keys = sweep.spec.runs()
    assert [(k.model, k.seed) for k in keys] == list(RUNS)
    for key in keys:
        place(Path(sources[(key.model, key.seed)][0]), sweep, key)
    return sweep, keys


# -- the reader ---------------------------------------------------------------------------------
def test_live_runs_match_a_full_read_group_by_model_and_follow_a_growing_log(sources, tmp_path, monkeypatch):
    sweep, keys = make_sweep(sources, tmp_path)
    named = [(k.name, sweep.run_folder(k)) for k in keys]
    reader = LiveRuns(named)
    runs = reader.read()
    for (name, folder), run in zip(named, runs, strict=True):
        assert run.row == run_row(folder, name)[0]  # incremental = a whole read
        assert (run.task, run.preset, run.kind, run.holder) == ("lpn", "quick", "stop", None)
    assert [r.model for r in runs] == ["scripted", "other", "scripted", "other"]

    got = groups(runs)
    assert [(g.task, g.model, g.preset, len(g.runs)) for g in got] == [
        ("lpn", "other", "quick", 2), ("lpn", "scripted", "quick", 2)]  # sorted, as `report` lists them
    for g in got:
        curves = [curve_of(sources[(g.model, seed)][1]) for seed in (0, 1)]
        for t, point in enumerate(g.curve):
            vals = [c[t] for c in curves if t < len(c)]
            m, lo, hi = ci(vals)
            assert (point.val.n, point.val.mean) == (len(vals), pytest.approx(m))
            assert (point.val.lo, point.val.hi) == (pytest.approx(lo), pytest.approx(hi))
        gains = [c[-1] - c[0] for c in curves]
        assert g.gained == sum(x >= 0.03 - 1e-12 for x in gains)
    assert [p.val.n for p in got[0].curve] == [2, 1]  # the paused run has only T=0

    # Nothing changed: no log is opened again, the same values come back.
    opened = []
    real_store = status.SessionStore
    monkeypatch.setattr(status, "SessionStore", lambda folder, **kw: opened.append(folder) or real_store(folder, **kw))
    time.sleep(0.15)  # past the file-time tick (status.SessionLog reads a just-written file again)
    reader.read()
    opened.clear()
    again = reader.read()
    assert all(a is b for a, b in zip(again, reader.read(), strict=True))
    assert opened == []

    # The paused run's log grows (as its resumed process would write it): only it is new.
    grown = sweep.run_folder(keys[3])
    summary = sources[("other", 1)][1]
    store = SessionStore(grown)
    try:
        seed_hash = store.put_text("improver v1")
        store.append(ev.event(ev.IterationStarted(iteration=1, improver=seed_hash), "it1"))
        store.append(ev.event(ev.IterationAccepted(iteration=1, improver=seed_hash, val=0.75, test=0.7,
                                                   rule="paper"), "it1"))
    finally:
        store.close()
    after = reader.read()
    assert opened == [grown]  # only the log that moved
    assert all(a is b for a, b in zip(after[:3], again[:3], strict=True))
    assert after[3].row.val == (summary["seed_meta_utility"], 0.75)
    assert after[3].row == run_row(grown, keys[3].name)[0]
    g_other = groups(after)[0]
    m, lo, hi = ci([curve_of(sources[("other", 0)][1])[1], 0.75])
    assert g_other.curve[1].val.n == 2 and g_other.curve[1].val.mean == pytest.approx(m)


def test_live_runs_list_sessions_and_sweep_runs_and_survive_a_damaged_log(sources, tmp_path):
    sweep, keys = make_sweep(sources, tmp_path)
    sessions = sweep.folder.parent
    shutil.copytree(sources[("scripted", 0)][0], sessions / "alone", ignore=shutil.ignore_patterns("lock"))
    (sessions / "broken").mkdir()
    (sessions / "broken" / "session.db").write_bytes(b"not a database" * 100)
    listed = sessions_in(sessions)
    assert [name for name, _ in listed] == ["alone", "broken", *(f"sw/{k.name}" for k in sorted(keys, key=lambda k: k.name))]
    runs = LiveRuns(listed).read()
    broken = runs[1]
    assert broken.row.state == "unreadable" and broken.row.failed
    assert broken.row == run_row(sessions / "broken")[0]

    # A run that failed (the paused one, then an error): its reason, as a whole read says it.
    paused = sweep.run_folder(keys[3])
    store = SessionStore(paused)
    try:
        store.append(ev.event(ev.Error(message="the run's task raised: ValueError: bad instance\nTraceback ...")))
    finally:
        store.close()
    failed = LiveRuns([(keys[3].name, paused)]).read()[0]
    assert failed.row == run_row(paused)[0]
    assert state_of(failed) == "failed" and note(failed) == "the run's task raised: ValueError: bad instance"
    # Held by a process (the workbench that ran it keeps it open): running until its log says
    # it finished.
    done = runs[2]
    assert done.row.state == "finished" and state_of(done) == "finished"
    pid = {"pid": os.getpid(), "host": "here", "since": 0.0}
    assert state_of(dataclasses.replace(done, holder=pid)) == "finished"
    going = dataclasses.replace(done, row=dataclasses.replace(done.row, state="running"), holder=pid)
    assert state_of(going) == "running"
    assert [(g.model, len(g.runs)) for g in groups(runs)] == [("other", 2), ("scripted", 3)]  # "alone" joins its model's; broken none


# -- the screen, from a sweep -------------------------------------------------------------------
def row_of(app, run: str) -> str:
    lines = [line for line in screen_text(app).splitlines() if f"■ {run} " in line]
    return lines[0] if lines else ""


def test_compare_a_sweeps_runs_live_open_one_and_compare_the_marked(sources, tmp_path):
    sweep, keys = make_sweep(sources, tmp_path)
    s0, o0, s1, o1 = keys
    curves = {k: curve_of(sources[(k.model, k.seed)][1]) for k in keys}
    gate = GatedResponder(scored)
    with ScriptedLMServer(gate, models=MODELS) as server:
        app = StopApp(sweep=sweep, theme="dark", remember_theme=False)

        async def go():
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, lambda: "4 runs: 3 finished, 1 capped" in screen_text(app), 10)
                await pilot.press("c")  # nothing marked: every started run
                await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 5)
                await wait_until(pilot, lambda: "4 sessions in 2 groups" in screen_text(app), 10)
                text = screen_text(app)
                assert "■ lpn · scripted · quick" in text and "■ lpn · other · quick" in text
                assert side_line(0, [curves[s0][0], curves[s1][0]]) in text
                assert side_line(1, [curves[s0][1], curves[s1][1]]) in text
                assert side_line(1, [curves[o0][1]]) in text  # the paused run has no T=1 yet
                assert "paused" in row_of(app, o1.name) and "0/1" in row_of(app, o1.name)
                assert f"{curves[s0][-1]:.4f}" in row_of(app, s0.name)

                # A process resumes the paused run: the screen follows it to its end.
                proc = start("run", "--resume", str(sweep.run_folder(o1)), "--base-url", server.base_url,
                             "--max-calls", "20", "--quiet")
                try:
                    await wait_until(pilot, lambda: gate.waiting.is_set() or proc.poll() is not None, 60)
                    assert proc.poll() is None, proc.stderr.read()
                    await wait_until(pilot, lambda: "running" in row_of(app, o1.name), 10)
                    assert "1 running" in screen_text(app) and "run by pid" in row_of(app, o1.name)
                    while proc.poll() is None:
                        gate.release()
                        await pilot.pause(0.05)
                    assert proc.returncode == 0, proc.stderr.read()
                finally:
                    if proc.poll() is None:
                        kill9(proc)
                await wait_until(pilot, lambda: "finished" in row_of(app, o1.name)
                                 and "1/1" in row_of(app, o1.name), 20, "the resumed run, finished")
                resumed = run_row(sweep.run_folder(o1))[0].val
                await wait_until(pilot, lambda: side_line(1, [curves[o0][1], resumed[1]]) in screen_text(app), 10)
                assert "running" not in screen_text(app).splitlines()[0]

                # v: the test split's curves and numbers; m: one colour per session.
                chart = app.screen.query_one(CompareChart)
                await pilot.press("v")
                await wait_until(pilot, lambda: "Scores · test" in screen_text(app), 5)
                tests = [run_row(sweep.run_folder(k))[0].test for k in (s0, s1)]
                assert side_line(1, [t[1] for t in tests]) in screen_text(app)
                table = app.screen.query_one(CompareTable)

                def swatch(key) -> str:
                    return str(table.get_cell(key.name, "run").spans[0].style)

                assert swatch(s0) == swatch(s1) != swatch(o0)  # by group
                await pilot.press("m")
                await wait_until(pilot, lambda: swatch(s0) != swatch(s1), 5)
                assert chart.by == "session"
                await pilot.press("v", "m")

                # Enter opens a run read-only; escape comes back to the comparison.
                await pilot.press("enter")
                await wait_until(pilot, lambda: isinstance(app.screen, CompareRunScreen), 10)
                await settle(pilot)
                assert s0.name in header_line(app) and " finished " in header_line(app)
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 5)
                assert app.store is None
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), 5)

                # Marked runs only.
                await pilot.press("space", "space", "c")  # the first two: one per model
                await wait_until(pilot, lambda: "2 sessions in 2 groups" in screen_text(app), 10)
                assert row_of(app, s0.name) and row_of(app, o0.name) and not row_of(app, s1.name)
                assert side_line(0, [curves[s0][0]]) in screen_text(app)

        asyncio.run(go())


# -- from the palette and from a session's view --------------------------------------------------
def _synthetic(folder):
    """Two groups (models local and other) of synthetic sessions, fixed times."""
    stores = [write_session(folder, "a-local-1", iterations=2, planned=2, finished=True, seed=1),
              write_session(folder, "b-local-2", iterations=2, planned=2, finished=True, seed=2),
              write_session(folder, "c-other-3", iterations=2, planned=3, seed=3, model="other",
                            finished=False),
              write_session(folder, "d-other-4", iterations=1, planned=3, seed=4, model="other")]
    return stores


async def _palette_compare(pilot) -> None:
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), 5)
    await pilot.press(*"sessions: compare")
    await pilot.pause(0.3)
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ComparePickScreen), 5)


def test_the_palette_picks_sessions_to_compare_and_a_run_opens(tmp_path):
    for store in _synthetic(tmp_path / "sessions"):
        store.close()

    def take_over(_session):
        raise AssertionError("nothing is taken over here")

    async def go():
        app = StopApp(sessions_dir=tmp_path / "sessions", open_session_fn=take_over, theme="dark",
                      remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), 5)
            await _palette_compare(pilot)
            await wait_until(pilot, lambda: "d-other-4" in screen_text(app), 10)
            await pilot.press("c")
            await wait_until(pilot, lambda: any("Mark the sessions" in n for n in notices(app)), 5)
            await pilot.press("space", "down", "space")  # a-local-1 and c-other-3
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 5)
            await wait_until(pilot, lambda: "2 sessions in 2 groups" in screen_text(app), 10)
            assert row_of(app, "a-local-1") and row_of(app, "c-other-3") and not row_of(app, "b-local-2")
            await pilot.press("down", "enter")
            await wait_until(pilot, lambda: isinstance(app.screen, CompareRunScreen), 10)
            await settle(pilot)
            assert "c-other-3" in header_line(app) and "opened from Compare, read-only" in header_line(app)
            await pilot.press("r")
            await wait_until(pilot, lambda: any("Opened from Compare: read-only" in n for n in notices(app)), 5)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 5)
            await pilot.press("f1")  # help for the screen, naming its keys
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), 5)
            shown = app.screen.query_one("#help-pane", Markdown).source
            assert "`v` switches val / test, `m` colours by group or by session" in " ".join(shown.split())
            assert "`⏎` opens the highlighted run" in shown
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 5)
            await pilot.press("escape", "escape")
            await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), 5)
            assert app.store is None and app.open_session_fn is take_over  # the picker's sessions take over again

    asyncio.run(go())


def test_compare_from_a_sessions_view_marks_it_and_enter_goes_back_to_it(tmp_path):
    stores = _synthetic(tmp_path / "sessions")
    for store in stores[1:]:
        store.close()

    async def go():
        app = StopApp(store=stores[0], engine=False, theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.main is not None and app.main.is_mounted, 10)
            await settle(pilot)
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ComparePickScreen), 5)
            await wait_until(pilot, lambda: "d-other-4" in screen_text(app), 10)
            pick = app.screen.query_one(DataTable)
            assert [pick.get_cell(n, "mark") for n in ("a-local-1", "b-local-2")] == ["✓", " "]
            await pilot.press("down", "down", "down", "space", "c")  # and d-other-4
            await wait_until(pilot, lambda: "2 sessions in 2 groups" in screen_text(app), 10)
            await pilot.press("down", "enter")  # another session: this window shows a-local-1
            await wait_until(pilot, lambda: any("open d-other-4 with `stop-tui resume" in n
                                                for n in notices(app)), 5)
            await pilot.press("up", "enter")  # the session shown: back to it
            await wait_until(pilot, lambda: isinstance(app.screen, MainScreen) and app.screen is app.main, 5)
            assert "a-local-1" in header_line(app)

    asyncio.run(go())


# -- the snapshot -------------------------------------------------------------------------------
LABEL = {"pid": 4242, "host": "lab", "since": "2026-01-01 09:00:00 UTC"}


def test_compare_screen_snapshot(snap_compare, tmp_path):
    """Two groups, reached from the palette; d-other-4 runs (a held lock with a fixed label)
    and gains its T=2 point while the screen is up."""
    stores = _synthetic(tmp_path / "sessions")
    for store in stores[:3]:
        store.close()
    live = stores[3]
    lock = acquire(live.folder)
    fd = os.open(live.folder / "lock", os.O_WRONLY)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(LABEL) + "\n").encode(), 0)
    os.close(fd)

    async def compare_all_then_grow(pilot):
        app = pilot.app
        await _palette_compare(pilot)
        await wait_until(pilot, lambda: "d-other-4" in screen_text(app), 10)
        await pilot.press("space", "space", "space", "space", "c")
        await wait_until(pilot, lambda: "1 running" in screen_text(app), 10)
        improver = live.put_text("improver v2")
        live.append(ev.event(ev.IterationStarted(iteration=2, improver=improver), "it2", t=1_760_000_900.0))
        live.append(ev.event(ev.IterationAccepted(iteration=2, improver=improver, val=0.62, test=0.6,
                                                  rule="paper"), "it2", t=1_760_000_901.0))
        await wait_until(pilot, lambda: "2/3" in row_of(app, "d-other-4"), 10, "the live run's T=2")
        await pilot.pause()

    try:
        app = StopApp(sessions_dir=tmp_path / "sessions", theme="dark", remember_theme=False)
        assert snap_compare(app, terminal_size=SIZE, run_before=compare_all_then_grow)
    finally:
        lock.release()
        live.close()

"""The TUI's sweep screen (`stop-tui resume SWEEP`): a table of the sweep's runs kept current from
their logs, enter opening a run in the live read-only view, escape back to the table.

Real parts: sessions run on the scripted LM server placed in the sweep layout; one run is
resumed by a real `stop-tui run --resume` subprocess (the writer the sweep's Ray task would
be), gated request by request, while the app follows it read-only. No Ray is needed: the
screen reads only the run folders."""

from __future__ import annotations

import asyncio

import pytest
from lm_helpers import GatedResponder, kill9, start
from scripted_server import ScriptedLMServer
from sweep_helpers import make_sources, new_sweep, place
from textual.widgets import DataTable
from tui_helpers import header_line, notices, screen_text, settle, wait_until

from stop_tui.engine import events as ev
from stop_tui.engine.lock import holder
from stop_tui.tui.app import StopApp
from stop_tui.tui.palette import palette
from stop_tui.tui.screens.sweep import SweepRunScreen, SweepScreen
from stop_tui.tui.synthetic import write_session

SIZE = (160, 40)


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("sources"))


def row_of(app, run: str) -> str:
    """The table row of run `run`, as the screen shows it."""
    lines = [line for line in screen_text(app).splitlines() if f" {run} " in line]
    return lines[0] if lines else ""


def test_the_table_follows_the_runs_and_any_run_opens_live(sources, tmp_path):
    sweep = new_sweep(tmp_path / "sessions", seeds=(0, 1))
    done, resumed, later, pending = sweep.spec.runs()
    place(sources.finished, sweep, done)
    folder = place(sources.capped, sweep, resumed)
    gate = GatedResponder()
    with ScriptedLMServer(gate) as server:
        app = StopApp(sweep=sweep, remember_theme=False)

        async def go():
            async with app.run_test(size=SIZE) as pilot:
                table = app.screen.query_one(DataTable)
                await wait_until(pilot, lambda: len(table.rows) == 4, 10, "the runs' rows")
                await wait_until(pilot, lambda: "capped" in row_of(app, resumed.name), 10)
                await wait_until(pilot, lambda: "finished  1/1   0.5025" in row_of(app, done.name), 10)
                assert "pending" in row_of(app, later.name) and "pending" in row_of(app, pending.name)
                assert "4 runs: 1 finished, 1 capped, 2 pending" in screen_text(app)

                # A run that has not started opens nothing.
                await pilot.press("down", "down", "enter")
                await wait_until(pilot, lambda: any("has not started yet" in n for n in notices(app)), 5)
                assert isinstance(app.screen, SweepScreen)

                # Another process (as the sweep's task would) resumes a run: the table says so.
                proc = start("run", "--resume", str(folder), "--base-url", server.base_url,
                             "--max-calls", "20", "--quiet")
                try:
                    await wait_until(pilot, lambda: gate.waiting.is_set() or proc.poll() is not None, 60)
                    assert proc.poll() is None, proc.stderr.read()
                    pid = holder(folder)["pid"]
                    await wait_until(pilot, lambda: f"run by pid {pid}" in row_of(app, resumed.name), 10)
                    assert "running" in row_of(app, resumed.name)

                    # Enter opens it: the session view, read-only, following the run live.
                    await pilot.press("up", "enter")
                    await wait_until(pilot, lambda: isinstance(app.screen, SweepRunScreen), 10)
                    await settle(pilot)
                    await wait_until(pilot, lambda: f"read-only: run by pid {pid}" in header_line(app), 10)
                    assert resumed.name in header_line(app) and "iter 0/1" in header_line(app)
                    while proc.poll() is None:
                        gate.release()  # let the run go on, a request at a time
                        await pilot.pause(0.05)
                    assert proc.returncode == 0, proc.stderr.read()
                    await wait_until(pilot, lambda: " finished " in header_line(app), 20, "finished, seen live")
                    assert "iter 1/1" in header_line(app)
                    await wait_until(pilot, lambda: any(n.startswith(f"The run by pid {pid} on ")
                                                        and n.endswith(" finished.") for n in notices(app)), 10)
                finally:
                    if proc.poll() is None:
                        kill9(proc)

                # Escape: back to the table, which has followed the run to its end.
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), 5)
                assert app.store is None and app.follower is None
                await wait_until(pilot, lambda: "finished  1/1" in row_of(app, resumed.name), 10)
                assert "2 finished, 2 pending" in screen_text(app)

                # A run opened again after escape shows its own session.
                await pilot.press("up", "enter")
                await wait_until(pilot, lambda: isinstance(app.screen, SweepRunScreen), 10)
                await settle(pilot)
                assert done.name in header_line(app) and " finished " in header_line(app)
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), 5)

        asyncio.run(go())


def _synthetic_sweep(tmp_path):
    """Deterministic runs (synthetic logs, fixed clocks): finished, capped, failed, interrupted,
    pending."""
    sweep = new_sweep(tmp_path / "sessions", seeds=(0, 1, 2), name="sweep-demo")
    keys = sweep.spec.runs()
    write_session(sweep.folder, keys[0].name, iterations=1, planned=1, finished=True).close()
    capped = write_session(sweep.folder, keys[1].name, iterations=0, planned=1)
    capped.append(ev.event(ev.Paused(reason="the LM cost cap is reached ($0.50 of --max-cost 0.50)",
                                     cap="--max-cost"), t=1.0))
    capped.close()
    failed = write_session(sweep.folder, keys[2].name, iterations=1, planned=1, seed=3)
    failed.append(ev.event(ev.Error(message="the run's task raised: ValueError: bad instance"), t=1.0))
    failed.close()
    write_session(sweep.folder, keys[3].name, iterations=0, planned=1, seed=5).close()
    return sweep


async def _table_filled(pilot) -> None:
    table = pilot.app.screen.query_one(DataTable)
    await wait_until(pilot, lambda: len(table.rows) == 6 and "failed" in screen_text(pilot.app), 10)
    await pilot.pause()


def test_sweep_screen_snapshot(snap_compare, tmp_path):
    app = StopApp(sweep=_synthetic_sweep(tmp_path), theme="dark", remember_theme=False)
    assert snap_compare(app, terminal_size=(160, 24), run_before=_table_filled)


def test_resume_of_a_sweep_opens_its_table(tmp_path, monkeypatch):
    from stop_tui import cli
    from stop_tui.tui import launch

    sweep = new_sweep(tmp_path / "sessions", seeds=(0,), name="sw")
    opened = []
    monkeypatch.setattr(launch, "run_app", lambda app: opened.append(app) or 0)
    assert cli.main(["resume", "sw", "--sessions-dir", str(tmp_path / "sessions")]) == 0
    assert cli.main(["resume", str(sweep.folder)]) == 0
    assert [app.sweep.folder for app in opened] == [sweep.folder, sweep.folder]
    assert all(app.store is None and app.session is None for app in opened)


def test_the_picker_lists_a_sweep_and_opens_its_table(tmp_path):
    sweep = _synthetic_sweep(tmp_path)
    write_session(tmp_path / "sessions", "20260101-090000-lpn", iterations=1, finished=True).close()

    async def go():
        app = StopApp(sessions_dir=tmp_path / "sessions", theme="dark", remember_theme=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: "sweep: 6 runs" in screen_text(app), 10)
            assert "20260101-090000-lpn" in screen_text(app)
            await pilot.press("down", "enter")  # the session first, then the sweep
            await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), 10)
            await wait_until(pilot, lambda: "finished  1/1" in row_of(app, sweep.spec.runs()[0].name), 10)
            table = app.screen.query_one(DataTable)
            finished_style = str(table.get_cell(sweep.spec.runs()[0].name, "state").style)
            app.theme = "light"  # the states are drawn in the new theme's colours
            await wait_until(pilot, lambda: str(table.get_cell(sweep.spec.runs()[0].name, "state").style)
                             == palette(app)["primary"] != finished_style, 5)
            await pilot.press("down", "down", "down", "enter")  # the interrupted run
            await wait_until(pilot, lambda: isinstance(app.screen, SweepRunScreen), 10)
            await settle(pilot)
            assert sweep.spec.runs()[3].name in header_line(app)
            assert "a run of sweep sweep-demo, read-only" in header_line(app)
            await pilot.press("r")  # the run keys say why they do nothing here
            await wait_until(pilot, lambda: any("read-only here" in n for n in notices(app)), 5)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), 5)

    asyncio.run(go())

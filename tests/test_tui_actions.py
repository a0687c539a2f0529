"""Keys as data: every action in the registry (tui/actions.py) is bound, listed in the command
palette and in F1 help, and a key remapped while the app runs (App.set_keymap, as the user's
config keymap does at start) shows as the new key in help, the palette and the pane hints, and
runs the action."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Footer, Markdown

from stop_tui.tui.actions import ACTIONS, APP, HELP, LINEAGE, MAIN, PALETTE_SCOPES
from stop_tui.tui.app import StopApp
from stop_tui.tui.screens.help import HelpScreen
from stop_tui.tui.synthetic import write_session
from stop_tui.tui.widgets.header import SessionHeader
from stop_tui.tui.widgets.lineage import LineagePane
from stop_tui.tui.widgets.scores import ScoresPane
from stop_tui.tui.widgets.source import SourcePane

SIZE = (160, 48)
DEFAULT_SHOWN = {"space": "space", "full_stop": ".", "right": "→", "left": "←"}  # as the footer shows keys


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await pilot.pause(0.05)


def _viewer(tmp_path, open_session_fn=None, **session) -> StopApp:
    """A synthetic session viewed with no engine (with `open_session_fn`, run keys would take it over)."""
    store = write_session(tmp_path / "sessions", "demo", **{"iterations": 1, **session})
    return StopApp(store=store, engine=open_session_fn is not None, open_session_fn=open_session_fn,
                   theme="dark", remember_theme=False)


def _drive(tmp_path, steps, open_session_fn=None, **session) -> None:
    """`await steps(app, pilot)` with the app of `_viewer` running in a test terminal, its
    main screen up."""
    async def go():
        app = _viewer(tmp_path, open_session_fn, **session)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.main is not None and app.main.is_mounted)
            await steps(app, pilot)

    asyncio.run(go())


async def _help(pilot) -> tuple[str, str]:
    """Open F1 and return (the focused pane's help, the keys table) as the screen shows them."""
    app = pilot.app
    await pilot.press("f1")
    await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
    screen = app.screen
    pane = screen.query("#help-pane")
    texts = (pane.first(Markdown).source if pane else "", screen.query_one("#help-keys", Markdown).source)
    await pilot.press("escape")
    await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))
    return texts


def _row(table: str, action_id: str) -> str:
    return next(line for line in table.splitlines() if line.endswith(f"| `{action_id}` |"))


async def _palette(pilot, query: str = "") -> list[str]:
    """Open ctrl+p, type `query`, return each listed command as text (title, then its help)."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    if query:
        await pilot.press(*query)
    commands = app.screen.query_one(CommandList)
    await wait_for(pilot, lambda: commands.option_count > 0 and (
        not query or any(query in c.prompt.plain for c in commands.options)))
    return [c.prompt.plain for c in commands.options]


def _footer(app) -> list[tuple[str, str]]:
    return [(k.key_display, k.description) for k in app.screen.query_one(Footer).query("FooterKey")]


def test_every_action_is_bound_listed_in_the_palette_and_in_help(tmp_path):
    async def steps(app, pilot):
        await wait_for(pilot, lambda: isinstance(app.focused, LineagePane))
        pane_help, table = await _help(pilot)
        session_actions = [a for a in ACTIONS if a.scope in PALETTE_SCOPES]
        for action in session_actions:
            shown = DEFAULT_SHOWN.get(action.key, action.key)
            if action.scope in (MAIN, APP):  # the screen's and the app's keys
                assert _row(table, action.id).startswith(f"| `{shown}` | {action.tooltip} |")
            else:  # the Lineage pane's own keys are in its help (it has focus)
                assert action.scope == LINEAGE and f"`{shown}`" in pane_help
        assert "`a` jumps to the accepted improver" in pane_help
        for line in ("| `tab` | Next pane | |", "| `^p` | Command palette", "| `^q` | Quit"):
            assert line in table  # Textual's own keys, read from the bindings too
        listed = await _palette(pilot)
        assert not any(a.title in listed for a in ACTIONS if a.scope not in PALETTE_SCOPES)
        for action in session_actions:
            shown = DEFAULT_SHOWN.get(action.key, action.key)
            assert f"{action.title}\n{shown}: {action.tooltip}" in listed
        assert "theme: paper\nswitch to the paper theme" in listed

    _drive(tmp_path, steps)


def test_a_key_remapped_while_running_shows_everywhere_and_runs_the_action(tmp_path):
    async def steps(app, pilot):
        source = app.screen.query_one(SourcePane)
        await wait_for(pilot, lambda: source.border_subtitle == "d diff · e exchange")
        footer_before = _footer(app)
        app.set_keymap({"view.diff": "x", "go.accepted": "z"})
        await pilot.pause()
        # the pane hint, F1 help (the keys table and the focused pane's help), the palette
        assert source.border_subtitle == "x diff · e exchange"
        pane_help, table = await _help(pilot)
        assert _row(table, "view.diff").startswith("| `x` | Toggle the diff against the parent |")
        assert _row(table, "go.accepted").startswith("| `z` |")
        assert "`z` jumps to the accepted improver" in pane_help and "`a` jumps" not in pane_help
        assert not any(line.startswith("| `d` |") for line in table.splitlines())
        listed = await _palette(pilot, "diff against")
        assert "view: diff against parent\nx: Toggle the diff against the parent" in listed
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
        # the footer is as it was (same actions, same order), but for the remapped keys
        new_keys = {"Diff": "x", "Accepted": "z"}
        assert _footer(app) == [(new_keys.get(d, k), d) for k, d in footer_before]
        assert ("d", "Diff") in footer_before and ("a", "Accepted") in footer_before
        # the new key runs the action; the old one no longer does
        await pilot.press("down", "x")
        await wait_for(pilot, lambda: source.border_title == "Source · diff")
        await pilot.press("d")
        await pilot.pause()
        assert source.border_title == "Source · diff"
        await pilot.press("x")
        await wait_for(pilot, lambda: source.border_title == "Source")

    _drive(tmp_path, steps)


def test_the_other_screens_keys_come_from_the_registry_and_remap(tmp_path):
    """Help's close key (a registry action of the help screen) remapped: its hint names the new
    key, the new key closes help and the old one does not."""
    async def steps(app, pilot):
        assert [a.id for a in ACTIONS if a.scope == HELP] == [b.id for b in HelpScreen.BINDINGS]
        app.set_keymap({"help.close": "c"})
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        box = app.screen.query_one("#help-box")
        await wait_for(pilot, lambda: box.border_subtitle == "c to close")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("c")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))

    _drive(tmp_path, steps)


def test_palette_commands_run_their_actions(tmp_path):
    async def steps(app, pilot):
        source = app.screen.query_one(SourcePane)
        lineage = app.screen.query_one(LineagePane)
        await wait_for(pilot, lambda: lineage.cursor_node is not None and lineage.cursor_node.data)
        await _palette(pilot, "view: LM exchange")
        await pilot.press("enter")
        await wait_for(pilot, lambda: source.border_title == "Source · LM exchange")
        await pilot.press("down")  # T=1, open as the newest iteration
        await wait_for(pilot, lambda: lineage.cursor_node.data == "it1")
        assert lineage.cursor_node.is_expanded
        await _palette(pilot, "lineage: collapse node")  # the Lineage pane's own keys
        await pilot.press("enter")
        await wait_for(pilot, lambda: not lineage.cursor_node.is_expanded)
        await _palette(pilot, "lineage: expand node")
        await pilot.press("enter")
        await wait_for(pilot, lambda: lineage.cursor_node.is_expanded)

    _drive(tmp_path, steps)


def test_the_header_and_scores_name_the_run_and_step_keys_bound_now(tmp_path):
    def no_engine_here(session_id):  # the keys are never pressed: nothing is opened
        raise AssertionError("not opened in this test")

    async def steps(app, pilot):
        header, scores = app.screen.query_one(SessionHeader), app.screen.query_one(ScoresPane)
        await wait_for(pilot, lambda: "r runs, space steps" in header.render().plain)
        assert "No scores yet: step an iteration (space) or run (r)." in scores.render().plain
        app.set_keymap({"run.toggle": "g", "run.step_iteration": "n"})
        await wait_for(pilot, lambda: "g runs, n steps" in header.render().plain)
        assert "No scores yet: step an iteration (n) or run (g)." in scores.render().plain

    _drive(tmp_path, steps, open_session_fn=no_engine_here, iterations=0, planned=2, seed_scored=False)

"""Snapshots of the main screen in every shipped theme and of the diff view, drawn from a
synthetic event log with the engine off (fixed times, no clocks, no cursor blink)."""

from __future__ import annotations

import pytest

from stop_tui.tui.app import StopApp
from stop_tui.tui.synthetic import write_session
from stop_tui.tui.theming import discover_themes

SIZE = (160, 48)
SHIPPED = ["dark", "light", "paper"]


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _app(tmp_path, theme: str) -> StopApp:
    store = write_session(tmp_path / "sessions", "demo", iterations=2, planned=3,
                          sandbox_missing=("no_network",))
    return StopApp(store=store, engine=False, theme=theme, remember_theme=False)


def test_shipped_themes_are_files():
    names = [tf.theme.name for tf in discover_themes()]
    assert names[:3] == SHIPPED


@pytest.mark.parametrize("theme", SHIPPED)
def test_main_screen(snap_compare, tmp_path, theme):
    assert snap_compare(_app(tmp_path, theme), terminal_size=SIZE)


def test_diff_view(snap_compare, tmp_path):
    # T=1 -> its first candidate, then the diff against the improver that proposed it.
    assert snap_compare(_app(tmp_path, "dark"), terminal_size=SIZE,
                        press=["down", "right", "down", "d"])


def test_new_session_first_frame(snap_compare, tmp_path):
    # Nothing has run: T=0 is selected and Source shows the seed improver it will score.
    store = write_session(tmp_path / "sessions", "new", iterations=0, planned=2, seed_scored=False)
    assert snap_compare(StopApp(store=store, engine=False, theme="dark", remember_theme=False),
                        terminal_size=SIZE)

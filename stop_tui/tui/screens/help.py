"""F1: the keys, and help for the pane that has focus."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from stop_tui.tui.actions import (
    ACTIONS,
    APP,
    HELP,
    MAIN,
    TEXTUAL_KEYS,
    bindings,
    fill_keys,
    key_text,
    live_keys,
)

INTRO = "# stop-tui\n"

OUTRO = """\
Remap a key in `~/.config/stop-tui/config.json` by its binding id:
`{"keymap": {"view.diff": "x"}}`.

States in the header: **running** (the gate is open), **stepping** (one iteration or one LM
call is going through), **paused** (the engine waits at a gate: nothing is being spent),
**finished**, **stopping**, **viewing** (the engine is off).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def keys_markdown(keys: dict[str, list[str]]) -> str:
    """The keys table: every action of the main screen and of the app, and Textual's own keys,
    each with the keys bound to it now (`keys` from actions.live_keys)."""
    rows = ["| key | does | binding id |", "|---|---|---|"]
    for action in ACTIONS:
        if action.scope in (MAIN, APP):
            rows.append(f"| `{_cell(key_text(keys, action.id))}` | {_cell(action.tooltip)} | `{action.id}` |")
    for name, does in TEXTUAL_KEYS:
        rows.append(f"| `{_cell(key_text(keys, name))}` | {_cell(does)} | |")
    return "\n".join([INTRO, *rows, "", OUTRO])


class HelpScreen(ModalScreen[None]):
    BINDINGS = bindings(HELP)

    def __init__(self, keys: dict[str, list[str]], pane_help: str | None = None) -> None:
        """`keys`: the keys bound now on the screen help was opened from (actions.live_keys);
        `pane_help`: the focused pane's HELP, whose `{key:ID}` placeholders name them."""
        super().__init__()
        self.keys = keys
        self.pane_help = fill_keys(pane_help, keys) if pane_help else None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            if self.pane_help:
                yield Markdown(self.pane_help, id="help-pane")
            yield Markdown(keys_markdown(self.keys), id="help-keys")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Help"
        box.border_subtitle = f"{key_text(live_keys(self), 'help.close')} to close"

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)

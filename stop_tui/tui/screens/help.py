"""F1: the keys, and help for the pane that has focus."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

KEYS = """\
# stop-tui

| key | does |
|---|---|
| `space` | step one iteration (run until the next iteration boundary, then pause) |
| `.` | step one LM call |
| `r` | run / pause |
| `d` | toggle the diff against the parent |
| `e` | show the LM exchange that produced the node |
| `a` | jump to the accepted improver |
| `t` | next theme |
| `tab` | next pane |
| `ctrl+p` | command palette (every action, every theme) |
| `F1` | this help |
| `ctrl+q` | quit: the engine stops at its next gate; resume later with `stop-tui resume` |

States in the header: **running** (the gate is open), **stepping** (one iteration or one LM
call is going through), **paused** (the engine waits at a gate: nothing is being spent),
**finished**, **stopping**, **viewing** (the engine is off).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="help.close"),
        Binding("f1", "dismiss", "Close", show=False, id="help.close_f1"),
        Binding("q", "dismiss", "Close", show=False, id="help.close_q"),
    ]

    def __init__(self, pane_help: str | None = None) -> None:
        super().__init__()
        self.pane_help = pane_help

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            if self.pane_help:
                yield Markdown(self.pane_help, id="help-pane")
            yield Markdown(KEYS, id="help-keys")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "Help"
        box.border_subtitle = "escape to close"

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)

"""F1: the keys, and help for the pane that has focus."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

KEYS = """\
# stop-tui

| key | does | binding id |
|---|---|---|
| `space` | step one iteration (run to the next iteration boundary, then pause) | `run.step_iteration` |
| `.` | step one LM call | `run.step_call` |
| `r` | run / pause | `run.toggle` |
| `d` | toggle the diff against the parent | `view.diff` |
| `e` | show the LM exchange that produced the node | `view.exchange` |
| `a` | jump to the accepted improver | `go.accepted` |
| `t` | next theme | `theme.next` |
| `F1` | this help | `app.help` |
| `tab` | next pane | |
| `ctrl+p` | command palette (every action, every theme) | |
| `ctrl+q` | quit: the engine stops at its next gate; `stop-tui resume` continues | |

Remap a key in `~/.config/stop-tui/config.json`: `{"keymap": {"view.diff": "x"}}`.

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

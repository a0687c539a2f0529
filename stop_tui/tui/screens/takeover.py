"""Offered when the process that ran the session being watched has ended: take it over here?"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from stop_tui.tui.actions import TAKEOVER, bindings, key_text, live_keys
from stop_tui.tui.follow import Holder


class TakeOverScreen(ModalScreen[bool]):
    BINDINGS = bindings(TAKEOVER)

    def __init__(self, before: Holder, reason: str | None) -> None:
        super().__init__()
        self.before = before
        self.reason = reason

    def compose(self) -> ComposeResult:
        state = f"It is paused: {self.reason}." if self.reason else "It did not finish."
        here, main = live_keys(self), self.app.keys_now()  # the keys bound now, after any keymap
        then = f"{key_text(main, 'run.toggle')} runs, {key_text(main, 'run.step_iteration')} steps"
        with Vertical(id="takeover-box"):
            yield Static(f"{self.before.who} stopped running this session. {state}\n\n"
                         f"{key_text(here, 'takeover.yes')}  take it over: run it here (paused; then {then})\n"
                         f"{key_text(here, 'takeover.no')}  keep watching read-only", id="takeover-text",
                         markup=False)

    def on_mount(self) -> None:
        box = self.query_one("#takeover-box")
        box.border_title = "Take the session over?"

    def action_answer(self, take: bool) -> None:
        self.dismiss(take)

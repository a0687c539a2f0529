"""The command palette (ctrl+p): every registry action (tui/actions.py) under its namespaced
title, with the key bound to it now (a session's actions once one is open, the app's on every
screen), and every theme."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from stop_tui.tui.actions import ACTIONS, APP, LINEAGE, PALETTE_SCOPES, key_text
from stop_tui.tui.widgets.lineage import LineagePane


class StopCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable, str]]:
        app = self.app
        out: list[tuple[str, Callable, str]] = []
        main = app.main
        session_open = main is not None and main.is_mounted
        keys = app.keys_now()
        for action in (a for a in ACTIONS if a.scope in PALETTE_SCOPES):
            if action.scope == APP:  # on every screen
                where = app
            elif session_open:  # the session's actions, once one is open
                where = main.query_one(LineagePane) if action.scope == LINEAGE else main
            else:
                continue
            said = f"{key_text(keys, action.id)}: {action.tooltip}" if keys.get(action.id) else action.tooltip
            out.append((action.title, partial(app.run_action, action.action, where), escape(said)))
        for name in app.theme_names:
            out.append((f"theme: {name}", partial(app.set_theme, name), f"switch to the {name} theme"))
        return out

    async def discover(self) -> Hits:
        for title, callback, help_text in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

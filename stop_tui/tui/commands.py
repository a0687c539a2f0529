"""The command palette (ctrl+p): every key's action and every theme, with namespaced titles."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class StopCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        out: list[tuple[str, object, str]] = [
            ("run: step one iteration", app.action_step_iteration, "space: run to the next iteration boundary"),
            ("run: step one LM call", app.action_step_call, ".: let one LM call through"),
            ("run: run / pause", app.action_toggle_run, "r: open or close the gate"),
            ("view: diff against parent", partial(app.screen_action, "toggle_diff"), "d"),
            ("view: LM exchange", partial(app.screen_action, "show_exchange"), "e"),
            ("go: accepted improver", partial(app.screen_action, "jump_accepted"), "a"),
            ("help: keys and panes", app.action_help, "F1"),
        ]
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

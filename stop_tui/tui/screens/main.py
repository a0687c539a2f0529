"""The main screen: Lineage, Source, Scores, Budget and Log under a session header."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import ActiveBinding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer

from stop_tui.tui.actions import MAIN, bindings, in_registry_order, live_keys
from stop_tui.tui.messages import NodeSelected
from stop_tui.tui.model import Snapshot
from stop_tui.tui.widgets.budget import BudgetPane
from stop_tui.tui.widgets.header import SessionHeader
from stop_tui.tui.widgets.lineage import LineagePane
from stop_tui.tui.widgets.log import LogPane
from stop_tui.tui.widgets.scores import ScoresPane
from stop_tui.tui.widgets.source import DIFF, EXCHANGE, SourcePane

INITIAL_LOG_LINES = 200
COMPACT_FOOTER = 120  # terminal columns below which the footer drops its padding


class MainScreen(Screen[None]):
    BINDINGS = bindings(MAIN)

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Textual's, in the registry's order: a binding a keymap moved to another key keeps
        its place in the footer (Textual lists it after the others)."""
        return in_registry_order(super().active_bindings)

    def __init__(self, app_state) -> None:
        super().__init__()
        self.st = app_state

    def compose(self) -> ComposeResult:
        st = self.st
        yield SessionHeader(st.model, id="header")
        with Horizontal(id="top"):
            yield LineagePane(st.model, id="lineage")
            yield SourcePane(st.model, st.texts, st.seed_solution, st.seed_improver, id="source")
        with Horizontal(id="middle"):
            yield ScoresPane(st.model, st.session_dir, id="scores")
            yield BudgetPane(st.model, id="budget")
        yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LineagePane).border_title = "Lineage"
        snapshot = self.st.model  # the latest: what came before mounting is drawn from it
        self._versions = snapshot.versions
        self.query_one(LogPane).add_lines(list(snapshot.log)[-INITIAL_LOG_LINES:], snapshot.t0)
        self.query_one(LineagePane).focus()
        self.call_after_refresh(self.app.update_state)
        self.bindings_updated_signal.subscribe(self, self._keys_changed)

    def _keys_changed(self, _screen: Screen) -> None:
        """Focus moved or the keymap changed: the texts that name keys say the keys bound now."""
        keys = live_keys(self)
        self.query_one(SourcePane).keys_changed(keys)
        self.query_one(ScoresPane).keys_changed(keys)
        self.app.update_state()

    def on_resize(self) -> None:
        self.query_one(Footer).compact = self.size.width < COMPACT_FOOTER  # every key still fits

    def on_node_selected(self, message: NodeSelected) -> None:
        self.query_one(SourcePane).show(message.path)

    def action_toggle_diff(self) -> None:
        self.query_one(SourcePane).set_mode(DIFF)

    def action_show_exchange(self) -> None:
        self.query_one(SourcePane).set_mode(EXCHANGE)

    def action_jump_accepted(self) -> None:
        path = self.st.model.accepted_path()
        if path is None:
            self.notify("No improver has been accepted yet.", severity="warning")
            return
        lineage = self.query_one(LineagePane)
        lineage.select_path(path)
        lineage.focus()

    def show(self, snapshot: Snapshot) -> None:
        """Draw a new snapshot of the session: each pane only if its part of it changed."""
        before, self._versions = self._versions, snapshot.versions

        def changed(*parts: str) -> bool:
            return any(before.get(part) != snapshot.versions[part] for part in parts)

        try:
            lineage, source, log = self.query_one(LineagePane), self.query_one(SourcePane), self.query_one(LogPane)
            scores, budget, header = self.query_one(ScoresPane), self.query_one(BudgetPane), self.query_one(SessionHeader)
        except NoMatches:  # the app is closing: its panes are being removed
            return
        for pane in (lineage, source, scores, budget, header):
            pane.model = snapshot
        changes = snapshot.changes
        if changes.full:  # the log read at opening: everything drawn from the snapshot
            lineage.redraw()
            source.refresh_view()
            log.clear()
            log.add_lines(list(snapshot.log)[-INITIAL_LOG_LINES:], snapshot.t0)
            for pane in (scores, budget, header):
                pane.refresh()
            return
        if changes.added or changes.changed or changes.reset:
            lineage.apply_changes(changes.added, changes.changed, changes.reset)
        if changed("tree", "lm", "scores"):
            source.node_changed(changes.changed)
        if changed("scores"):
            scores.refresh()
        if changed("budget", "header"):
            budget.refresh()
        if changed("header"):
            header.refresh()
        if changes.log:
            log.add_lines(list(changes.log), snapshot.t0)

    def theme_changed(self) -> None:
        self.query_one(LineagePane).theme_changed()
        self.query_one(SourcePane).refresh_view(force=True)
        self.query_one(LogPane).theme_changed()
        for widget in (ScoresPane, BudgetPane, SessionHeader):
            self.query_one(widget).refresh()

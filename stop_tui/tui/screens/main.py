"""The main screen: Lineage, Source, Scores, Budget and Log under a session header."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

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


def _b(key: str, action: str, description: str, tooltip: str, id: str, *, show: bool = True,
       priority: bool = False, key_display: str | None = None) -> Binding:
    return Binding(key, action, description, show=show, priority=priority, tooltip=tooltip, id=id,
                   key_display=key_display)


class MainScreen(Screen[None]):
    BINDINGS = [
        _b("space", "app.step_iteration", "Step iter", "Run until the next iteration boundary, then pause",
           "run.step_iteration", priority=True, key_display="space"),
        _b("full_stop", "app.step_call", "Step call", "Let one LM call through, then pause",
           "run.step_call", key_display="."),
        _b("r", "app.toggle_run", "Run/Pause", "Open or close the gate", "run.toggle"),
        _b("d", "toggle_diff", "Diff", "Toggle the diff against the parent", "view.diff"),
        _b("e", "show_exchange", "Exchange", "Show the LM exchange that produced the node", "view.exchange"),
        _b("a", "jump_accepted", "Accepted", "Select the accepted improver", "go.accepted"),
        _b("t", "app.next_theme", "Theme", "Switch to the next theme", "theme.next"),
        _b("f1", "app.help", "Help", "Keys and help for the focused pane", "app.help"),
    ]

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

        lineage, source, log = self.query_one(LineagePane), self.query_one(SourcePane), self.query_one(LogPane)
        scores, budget, header = self.query_one(ScoresPane), self.query_one(BudgetPane), self.query_one(SessionHeader)
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
        for widget in (ScoresPane, BudgetPane, SessionHeader):
            self.query_one(widget).refresh()

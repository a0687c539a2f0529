"""The session picker (`stop-tui resume` with no id)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from stop_tui.engine.summary import summaries
from stop_tui.engine.sweep.status import sweep_summaries
from stop_tui.tui.actions import PICKER, bindings


def session_rows(sessions_dir: Path) -> list[dict]:
    rows = []
    for folder, s, _reason in reversed(list(summaries(sessions_dir))):
        if s is None:  # a damaged session still gets a row
            rows.append({"session": folder.name, "task": "?", "model": "?", "state": "unreadable",
                         "iterations": "-", "best": "-", "created": "-"})
            continue
        best = s["best_meta_utility"]
        rows.append({"session": s["session"], "task": s["task"] or "-", "model": s["model"] or "-",
                     "state": s["state"],
                     "iterations": f"{s['iterations_completed']}/{s['iterations_planned'] or '-'}",
                     "best": f"{best:.4f}" if isinstance(best, int | float) else "-",
                     "created": s["created"] or "-"})
    return rows + sweep_rows(sessions_dir)


def sweep_rows(sessions_dir: Path) -> list[dict]:
    """A row per sweep (it opens as the table of its runs), newest first."""
    rows = []
    for folder, s, _reason in reversed(list(sweep_summaries(sessions_dir))):
        if s is None:
            rows.append({"session": folder.name, "task": "?", "model": "?", "state": "unreadable",
                         "iterations": "sweep", "best": "-", "created": "-"})
            continue
        best = s["best_meta_utility"]
        rows.append({"session": s["sweep"], "task": ",".join(s["spec"]["tasks"]),
                     "model": ",".join(s["spec"]["models"]), "state": s["state"],
                     "iterations": f"sweep: {s['totals']['runs']} runs",
                     "best": f"{best:.4f}" if isinstance(best, int | float) else "-",
                     "created": s["created"] or "-"})
    return rows


class PickerScreen(Screen[str | None]):
    BINDINGS = bindings(PICKER)

    def __init__(self, sessions_dir: Path) -> None:
        super().__init__()
        self.sessions_dir = Path(sessions_dir)
        self.rows = session_rows(self.sessions_dir)

    def compose(self) -> ComposeResult:
        yield Static(f" Sessions in {self.sessions_dir}", id="picker-title")
        if not self.rows:
            yield Static(f"\n  No sessions in {self.sessions_dir}. Start one with "
                         "`stop-tui new --task lpn`.", id="picker-empty")
        table: DataTable = DataTable(id="picker-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Resume a session"
        for col in ("session", "task", "model", "state", "iterations", "best", "created"):
            table.add_column(col, key=col)
        for row in self.rows:
            table.add_row(*(row[k] for k in ("session", "task", "model", "state", "iterations", "best",
                                               "created")), key=row["session"])
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(event.row_key.value)

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.rows and table.cursor_row is not None and 0 <= table.cursor_row < len(self.rows):
            self.dismiss(self.rows[table.cursor_row]["session"])

    def action_cancel(self) -> None:
        self.dismiss(None)
